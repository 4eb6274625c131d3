//! Generating the payload struct, the `Operation` impl and the registration.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens as _, quote, quote_spanned};
use syn::{Attribute, Ident, ItemStruct, Path, Visibility};

use crate::ast::{self, HandlerFn, Input};
use crate::attr::Args;
use crate::ctxt::Ctxt;

/// Parses, checks and expands; `Err` carries every error found.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let cx = Ctxt::default();
    // A syntax error in the arguments leaves nothing to check the item
    // against: report it (and any value errors before it) alone.
    let args = match crate::attr::parse(args, &cx) {
        Ok(args) => args,
        Err(error) => {
            cx.syn_error(error);
            return Err(cx.check().expect_err("an error was just recorded"));
        }
    };
    let input = ast::parse(item, &args, &cx)?;
    cx.check()?;
    let Some(input) = input else {
        // Every path that yields no model reported an error above.
        return Ok(TokenStream::new());
    };
    let krate: Path = args
        .krate
        .as_ref()
        .map_or_else(|| syn::parse_quote!(::pgoutbox), |(_, path)| path.clone());
    Ok(match input {
        Input::Handler(handler) => expand_handler(&args, &krate, *handler),
        Input::Contract(item) => expand_contract(&args, &krate, *item),
    })
}

/// `OperationOptions::new().option(value)…` for the options in `args`.
fn options_expr(args: &Args, krate: &Path, base: TokenStream) -> TokenStream {
    let p = quote!(#krate::__private);
    let mut expr = base;
    if args.transactional.is_some() {
        expr = quote!(#expr.transactional(true));
    }
    if args.idempotent.is_some() {
        expr = quote!(#expr.idempotent(true));
    }
    if let Some((_, n)) = args.max_attempts {
        expr = quote!(#expr.max_attempts(#n));
    }
    if let Some((_, initial, max)) = &args.backoff {
        let (initial, max) = (initial.millis, max.millis);
        expr = quote!(#expr.backoff(#p::Backoff::new(
            #p::Duration::from_millis(#initial),
            #p::Duration::from_millis(#max),
        )));
    }
    if let Some((_, timeout)) = &args.timeout {
        let millis = timeout.millis;
        expr = quote!(#expr.timeout(#p::Duration::from_millis(#millis)));
    }
    if let Some((_, queue)) = &args.queue {
        expr = quote!(#expr.queue(#queue));
    }
    if let Some((_, priority)) = args.priority {
        expr = quote!(#expr.priority(#priority));
    }
    expr
}

/// The derives and crate paths every payload struct gets.
fn payload_derives(krate: &Path) -> TokenStream {
    let p = quote!(#krate::__private);
    let serde_crate = format!("{}::__private::serde", path_string(krate));
    let schemars_crate = format!("{}::__private::schemars", path_string(krate));
    quote! {
        #[derive(
            #p::serde::Serialize,
            #p::serde::Deserialize,
            #p::schemars::JsonSchema,
            ::core::fmt::Debug,
            ::core::clone::Clone,
        )]
        #[serde(crate = #serde_crate)]
        #[schemars(crate = #schemars_crate)]
    }
}

fn path_string(path: &Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}

/// `impl Operation for #payload`.
fn operation_impl(
    krate: &Path,
    payload: &TokenStream,
    name: &str,
    options: &TokenStream,
) -> TokenStream {
    let p = quote!(#krate::__private);
    quote! {
        impl #p::Operation for #payload {
            const NAME: &'static str = #name;
            const OPTIONS: #p::OperationOptions = #options;
            fn schema() -> &'static #p::OperationSchema {
                static SCHEMA: #p::OnceLock<#p::OperationSchema> = #p::OnceLock::new();
                SCHEMA.get_or_init(#p::OperationSchema::of::<#payload>)
            }
        }
    }
}

fn expand_contract(args: &Args, krate: &Path, mut item: ItemStruct) -> TokenStream {
    let p = quote!(#krate::__private);
    let name = args
        .name
        .as_ref()
        .map(syn::LitStr::value)
        .unwrap_or_default();
    let ident = &item.ident;
    let payload = quote!(#ident);
    let options = options_expr(args, krate, quote!(#p::OperationOptions::new()));
    let derives = payload_derives(krate);
    let operation = operation_impl(krate, &payload, &name, &options);
    if !has_docs(&item.attrs) {
        let doc = format!(" Payload of the `{name}` operation.");
        item.attrs.insert(0, syn::parse_quote!(#[doc = #doc]));
    }
    quote! {
        #derives
        #item

        const _: () = {
            #operation

            static __PGOUTBOX_REGISTRATION: #p::Registration =
                #p::Registration::contract::<#payload>(::core::file!(), ::core::line!());
            #p::inventory::submit! { #p::Registered(&__PGOUTBOX_REGISTRATION) }
        };
    }
}

fn has_docs(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| a.path().is_ident("doc"))
}

#[allow(clippy::too_many_lines)] // One template, read top to bottom.
fn expand_handler(args: &Args, krate: &Path, handler: HandlerFn) -> TokenStream {
    let p = quote!(#krate::__private);
    let HandlerFn {
        item,
        context_ty,
        fields,
        ident_span,
        output_span,
    } = handler;
    let fn_ident = &item.sig.ident;
    let vis = &item.vis;
    let fn_name = fn_ident.to_string();

    // The payload type: generated here, or the contract's.
    let (payload_ty, payload_struct, operation, base_options) = if let Some((_, path)) =
        &args.contract
    {
        (
            quote!(#path),
            TokenStream::new(),
            TokenStream::new(),
            quote!(<#path as #p::Operation>::OPTIONS),
        )
    } else {
        {
            let ident = args
                .payload
                .as_ref()
                .map_or_else(|| ast::upper_camel(fn_ident), |(_, ident)| ident.clone());
            let name = args
                .name
                .as_ref()
                .map(syn::LitStr::value)
                .unwrap_or_default();
            let payload = quote!(#ident);
            let options = options_expr(args, krate, quote!(#p::OperationOptions::new()));
            let operation = operation_impl(krate, &payload, &name, &options);
            let payload_struct = payload_struct(krate, &item.attrs, vis, &ident, &name, &fields);
            (payload, payload_struct, operation, TokenStream::new())
        }
    };

    // A contract handler adds its own (handler-side) options to the
    // contract's; a generated payload's options are all in `OPTIONS`.
    let handler_options = if args.contract.is_some() {
        let only_handler_side = Args {
            transactional: args.transactional,
            backoff: args.backoff.clone(),
            timeout: args.timeout.clone(),
            ..Args::default()
        };
        options_expr(&only_handler_side, krate, base_options)
    } else {
        quote!(<#payload_ty as #p::Operation>::OPTIONS)
    };

    let context_span = first_token_span(&context_ty);
    let ctx_arg = quote_spanned!(context_span=> ctx);
    let field_args = fields.iter().map(|field| {
        let ident = &field.ident;
        if args.contract.is_some() {
            quote!(payload)
        } else {
            quote!(payload.#ident)
        }
    });
    let call = quote_spanned! {ident_span=>
        #p::assert_send(#fn_ident(#ctx_arg, #(#field_args),*))
    };
    let result_binding = quote_spanned! {output_span=>
        let result: ::core::result::Result<(), _> = future.await;
    };
    let (lifetimes, context, erased) = if args.transactional.is_some() {
        (
            quote!(<'a, 'c>),
            quote!(&'a mut #p::TxContext<'c>),
            quote!(#p::ErasedHandler::Transactional(__pgoutbox_handle)),
        )
    } else {
        (
            quote!(<'a>),
            quote!(&'a mut #p::Context),
            quote!(#p::ErasedHandler::Plain(__pgoutbox_handle)),
        )
    };
    let handler_fn = quote! {
        fn __pgoutbox_handle #lifetimes(
            ctx: #context,
            payload: #p::serde_json::Value,
        ) -> #p::BoxFuture<'a, ::core::result::Result<(), #p::HandlerFailure>> {
            #p::Box::pin(async move {
                let payload: #payload_ty = #p::decode(payload)?;
                let future = #call;
                #result_binding
                #p::finish(result)
            })
        }
    };
    let marker_doc =
        format!(" The registration of the `{fn_name}` handler, for `pgoutbox::handlers!`.");
    quote! {
        // `async` is required of every handler, awaited or not.
        #[allow(clippy::unused_async)]
        #item

        #payload_struct

        #[doc = #marker_doc]
        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code)]
        #vis struct #fn_ident {}

        const _: () = {
            #operation

            #handler_fn

            static __PGOUTBOX_REGISTRATION: #p::Registration = #p::Registration::handler::<#payload_ty>(
                #handler_options,
                #erased,
                #fn_name,
                ::core::file!(),
                ::core::line!(),
            );
            #p::inventory::submit! { #p::Registered(&__PGOUTBOX_REGISTRATION) }

            impl #p::Handler for #fn_ident {
                const REGISTRATION: &'static #p::Registration = &__PGOUTBOX_REGISTRATION;
            }
        };
    }
}

fn payload_struct(
    krate: &Path,
    fn_attrs: &[Attribute],
    vis: &Visibility,
    ident: &Ident,
    name: &str,
    fields: &[ast::PayloadField],
) -> TokenStream {
    let derives = payload_derives(krate);
    let mut docs: Vec<&Attribute> = fn_attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .collect();
    let default_doc: Attribute;
    if docs.is_empty() {
        let doc = format!(" Payload of the `{name}` operation.");
        default_doc = syn::parse_quote!(#[doc = #doc]);
        docs.push(&default_doc);
    }
    let fields = fields.iter().map(|field| {
        let attrs = &field.attrs;
        let ident = &field.ident;
        let ty = &field.ty;
        // Spanned on the type, so that errors about the field (a missing
        // `Serialize`, say) point at the user's type, not at the attribute.
        let ty_span = first_token_span(ty);
        let allow = if has_docs(attrs) {
            TokenStream::new()
        } else {
            quote_spanned!(ty_span=> #[allow(missing_docs)])
        };
        quote!(#(#attrs)* #allow #vis #ident: #ty)
    });
    quote! {
        #(#docs)*
        #derives
        #vis struct #ident {
            #(#fields,)*
        }
    }
}

fn first_token_span(tokens: &impl quote::ToTokens) -> Span {
    tokens
        .to_token_stream()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}

/// The item without what `#[operation]` would have consumed, emitted beside
/// `compile_error!` when expansion fails, so that the rest of the crate (and
/// the IDE) still sees the function or struct.
pub(crate) fn fallback(item: TokenStream) -> TokenStream {
    match syn::parse2::<syn::ItemFn>(item.clone()) {
        Ok(mut function) => {
            for input in &mut function.sig.inputs {
                if let syn::FnArg::Typed(pat_type) = input {
                    pat_type.attrs.retain(|a| {
                        !(a.path().is_ident("doc")
                            || a.path().is_ident("serde")
                            || a.path().is_ident("schemars"))
                    });
                }
            }
            function.into_token_stream()
        }
        Err(_) => item,
    }
}

/// Prints the expansion when `PGOUTBOX_MACROS_DEBUG=1`.
pub(crate) fn debug(output: &TokenStream) {
    if std::env::var_os("PGOUTBOX_MACROS_DEBUG").is_some_and(|v| v == "1") {
        eprintln!("{output}");
    }
}
