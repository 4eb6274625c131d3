//! The `#[operation]` and `#[payload]` attributes of pgoutbox. Use them
//! through `pgoutbox`, which re-exports and documents them as
//! `pgoutbox::operation` and `pgoutbox::payload`.
//!
//! The pipeline is parse (`attr`, `ast`: a typed model that keeps the
//! user's tokens) → check (`valid`: values, shapes and how they fit,
//! yielding the checked model) → generate (`expand`). Imports go one way,
//! `expand` → `valid` → `ast`, `attr` → `ctxt`; every user mistake is a
//! `syn::Error` on the offending tokens, collected in `ctxt` so one compile
//! shows them all.

mod ast;
mod attr;
mod ctxt;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Declares an operation: on an `async fn`, a handler and its payload
/// struct; on a struct, a publish-only contract. See `pgoutbox::operation`.
#[proc_macro_attribute]
pub fn operation(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    let output = match expand::operation(args.into(), item.clone()) {
        Ok(output) => output,
        Err(error) => {
            let mut output = error.into_compile_error();
            output.extend(expand::fallback(item));
            output
        }
    };
    expand::debug(&output);
    output.into()
}

/// Derives what a type used inside an operation payload needs. See
/// `pgoutbox::payload`.
#[proc_macro_attribute]
pub fn payload(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    let output = match expand::payload(args.into(), item.clone()) {
        Ok(output) => output,
        Err(error) => {
            let mut output = error.into_compile_error();
            output.extend(item);
            output
        }
    };
    expand::debug(&output);
    output.into()
}
