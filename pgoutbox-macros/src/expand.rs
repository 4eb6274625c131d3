//! Runs the pipeline (parse → check) and generates from the checked model:
//! for `#[operation]` the payload struct, the `Operation` impl and the
//! registration; for `#[payload]` the derives a nested payload type needs.

use proc_macro2::TokenStream;
use proc_macro2::TokenTree;
use quote::{ToTokens as _, quote, quote_spanned};
use syn::{Attribute, Fields, Ident, Item, ItemStruct, Path, Type, Visibility};

use crate::ast;
use crate::attr;
use crate::ctxt::Ctxt;
use crate::valid::{
    self, Handler, HandlerPayload, Operation, Options, Payload, PayloadField, Target,
};

/// Parses, checks and expands `#[operation]`; `Err` carries every error
/// found.
pub(crate) fn operation(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let cx = Ctxt::default();
    // A syntax error in the arguments leaves nothing to check the item
    // against: report it (and any duplicate before it) alone.
    let parsed = attr::parse(args, &cx).and_then(|args| Ok((args, ast::parse(item)?)));
    let checked = match parsed {
        Ok((args, input)) => valid::operation(&args, input, &cx),
        Err(error) => {
            cx.syn_error(error);
            None
        }
    };
    cx.check()?;
    // Every check that yields no model reported an error.
    Ok(checked.map(expand_operation).unwrap_or_default())
}

/// Parses, checks and expands `#[payload]`.
pub(crate) fn payload(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let cx = Ctxt::default();
    let parsed = attr::parse_payload(args, &cx).and_then(|krate| Ok((krate, ast::parse(item)?)));
    let checked = match parsed {
        Ok((krate, input)) => valid::payload(krate.as_ref(), input, &cx),
        Err(error) => {
            cx.syn_error(error);
            None
        }
    };
    cx.check()?;
    Ok(checked.map(expand_payload).unwrap_or_default())
}

fn expand_payload(payload: Payload) -> TokenStream {
    let Payload { krate, item } = payload;
    let derives = payload_derives(&krate);
    let checks = match &item {
        // A generic type's fields name its parameters, which the checks,
        // outside the type, cannot; serde's own errors remain.
        Item::Struct(item) if item.generics.params.is_empty() => {
            field_checks(&krate, fields_of(std::slice::from_ref(&item.fields)))
        }
        Item::Enum(item) if item.generics.params.is_empty() => {
            let variants: Vec<Fields> = item
                .variants
                .iter()
                .filter(|v| !v.attrs.iter().any(is_serde_attr))
                .map(|v| v.fields.clone())
                .collect();
            field_checks(&krate, fields_of(&variants))
        }
        _ => TokenStream::new(),
    };
    quote! {
        #checks
        #derives
        #item
    }
}

fn fields_of(fields: &[Fields]) -> impl Iterator<Item = (&[Attribute], &Type)> {
    fields
        .iter()
        .flat_map(|fields| fields.iter().map(|f| (f.attrs.as_slice(), &f.ty)))
}

/// `#[serde(…)]` or `#[schemars(…)]`.
fn is_serde_attr(attr: &Attribute) -> bool {
    ast::is_field_attr(attr) && !ast::is_doc(attr)
}

/// Checks, spanned on each field's type, that the type can be part of a
/// payload: `Serialize`, `Deserialize` and `JsonSchema`. The derives
/// already require as much, but their errors name hidden paths; the
/// `PayloadField` bound says to add `#[pgoutbox::payload]`. Fields with
/// `#[serde]` or `#[schemars]` attributes are left to the derives, since
/// `with`, `skip` and the like change what the field needs; so are types
/// naming `Self`, which a check outside the type cannot.
fn field_checks<'a>(
    krate: &Path,
    fields: impl IntoIterator<Item = (&'a [Attribute], &'a Type)>,
) -> TokenStream {
    let p = quote!(#krate::__private);
    let checks: TokenStream = fields
        .into_iter()
        .filter(|(attrs, ty)| !attrs.iter().any(is_serde_attr) && !names_self(ty.to_token_stream()))
        .map(|(_, ty)| {
            let span = ast::first_span(ty);
            quote_spanned!(span=> #p::assert_payload_field::<#ty>();)
        })
        .collect();
    if checks.is_empty() {
        return checks;
    }
    quote!(const _: () = { #checks };)
}

fn names_self(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|token| match token {
        TokenTree::Ident(ident) => ident == "Self",
        TokenTree::Group(group) => names_self(group.stream()),
        _ => false,
    })
}

fn expand_operation(operation: Operation) -> TokenStream {
    let Operation {
        krate,
        options,
        target,
    } = operation;
    match target {
        Target::Handler(handler) => expand_handler(&options, &krate, *handler),
        Target::Contract { name, item, output } => {
            expand_contract(&options, &krate, &name, *item, output.as_deref())
        }
    }
}

/// `OperationOptions::new().option(value)…` for the options given.
fn options_expr(options: &Options, krate: &Path, base: TokenStream) -> TokenStream {
    let p = quote!(#krate::__private);
    let duration = |d: std::time::Duration| {
        let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
        quote!(#p::Duration::new(#secs, #nanos))
    };
    let mut expr = base;
    if options.transactional {
        expr = quote!(#expr.transactional(true));
    }
    if options.idempotent {
        expr = quote!(#expr.idempotent(true));
    }
    if let Some(n) = options.max_attempts {
        expr = quote!(#expr.max_attempts(#n));
    }
    if let Some((initial, max)) = options.backoff {
        let (initial, max) = (duration(initial), duration(max));
        expr = quote!(#expr.backoff(#p::Backoff::new(#initial, #max)));
    }
    if let Some(timeout) = options.timeout {
        let timeout = duration(timeout);
        expr = quote!(#expr.timeout(#timeout));
    }
    if let Some(queue) = &options.queue {
        expr = quote!(#expr.queue(#queue));
    }
    if let Some(priority) = options.priority {
        expr = quote!(#expr.priority(#priority));
    }
    expr
}

/// The derives and crate paths every payload type gets.
fn payload_derives(krate: &Path) -> TokenStream {
    let p = quote!(#krate::__private);
    let serde_crate = format!("{}::__private::serde", ast::path_string(krate));
    let schemars_crate = format!("{}::__private::schemars", ast::path_string(krate));
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

/// The doc comment of a payload struct whose author wrote none.
fn default_doc(name: &str) -> Attribute {
    let doc = format!(" Payload of the `{name}` operation.");
    syn::parse_quote!(#[doc = #doc])
}

fn has_docs(attrs: &[Attribute]) -> bool {
    attrs.iter().any(ast::is_doc)
}

/// `impl Operation for #payload`.
fn operation_impl(
    krate: &Path,
    payload: &TokenStream,
    name: &str,
    options: &TokenStream,
    output: &TokenStream,
) -> TokenStream {
    let p = quote!(#krate::__private);
    // Spanned on the user's output type, so that what it lacks is
    // reported there (its own check says what to add), not on the
    // attribute.
    let span = output
        .clone()
        .into_iter()
        .next()
        .map_or_else(proc_macro2::Span::call_site, |t| t.span());
    let output_schema = quote_spanned! {span=>
        static SCHEMA: #p::OnceLock<#p::OperationSchema> = #p::OnceLock::new();
        SCHEMA.get_or_init(#p::OperationSchema::of::<#output>)
    };
    quote! {
        impl #p::Operation for #payload {
            const NAME: &'static str = #name;
            const OPTIONS: #p::OperationOptions = #options;
            type Output = #output;
            fn schema() -> &'static #p::OperationSchema {
                static SCHEMA: #p::OnceLock<#p::OperationSchema> = #p::OnceLock::new();
                SCHEMA.get_or_init(#p::OperationSchema::of::<#payload>)
            }
            fn output_schema() -> &'static #p::OperationSchema {
                #output_schema
            }
        }
    }
}

/// The output type's tokens (`()` when there is none) and, unless it is
/// `()`, the check that it can be one, spanned on the user's type so that
/// a missing derive points there.
fn output_type(krate: &Path, output: Option<&Type>) -> (TokenStream, TokenStream) {
    let p = quote!(#krate::__private);
    match output {
        Some(Type::Tuple(unit)) if unit.elems.is_empty() => (quote!(()), TokenStream::new()),
        Some(ty) => {
            let span = ast::first_span(ty);
            (
                quote!(#ty),
                quote_spanned!(span=> const _: () = #p::assert_output::<#ty>();),
            )
        }
        None => (quote!(()), TokenStream::new()),
    }
}

fn expand_contract(
    options: &Options,
    krate: &Path,
    name: &str,
    mut item: ItemStruct,
    output: Option<&Type>,
) -> TokenStream {
    let p = quote!(#krate::__private);
    let ident = &item.ident;
    let payload = quote!(#ident);
    let options = options_expr(options, krate, quote!(#p::OperationOptions::new()));
    let derives = payload_derives(krate);
    let (output, output_check) = output_type(krate, output);
    let operation = operation_impl(krate, &payload, name, &options, &output);
    let checks = field_checks(krate, fields_of(std::slice::from_ref(&item.fields)));
    if !has_docs(&item.attrs) {
        item.attrs.insert(0, default_doc(name));
    }
    quote! {
        #checks
        #derives
        #item

        #output_check

        const _: () = {
            #operation

            static __PGOUTBOX_REGISTRATION: #p::Registration =
                #p::Registration::contract::<#payload>(::core::file!(), ::core::line!());
            #p::inventory::submit! { #p::Registered(&__PGOUTBOX_REGISTRATION) }
        };
    }
}

#[allow(clippy::too_many_lines)] // One template, read top to bottom.
fn expand_handler(options: &Options, krate: &Path, handler: Handler) -> TokenStream {
    let p = quote!(#krate::__private);
    let Handler {
        item,
        payload,
        context_span,
        ident_span,
        output_span,
        output,
    } = handler;
    let fn_ident = &item.sig.ident;
    let vis = &item.vis;
    let fn_name = fn_ident.to_string();

    // The payload type: generated here, or the contract's. A contract
    // handler adds its own (handler-side) options to the contract's; a
    // generated payload's options are all in `OPTIONS`.
    let (output, output_check) = output_type(krate, output.as_ref());
    let (payload_ty, payload_struct, operation, handler_options, field_args) = match &payload {
        HandlerPayload::Contract(path) => (
            quote!(#path),
            TokenStream::new(),
            TokenStream::new(),
            options_expr(
                &options.handler_side(),
                krate,
                quote!(<#path as #p::Operation>::OPTIONS),
            ),
            vec![quote!(payload)],
        ),
        HandlerPayload::Generated {
            ident,
            name,
            fields,
        } => {
            let payload = quote!(#ident);
            let options = options_expr(options, krate, quote!(#p::OperationOptions::new()));
            let checks = field_checks(krate, fields.iter().map(|f| (f.attrs.as_slice(), &f.ty)));
            (
                payload.clone(),
                {
                    let payload_struct =
                        payload_struct(krate, &item.attrs, vis, ident, name, fields);
                    quote!(#checks #payload_struct)
                },
                operation_impl(krate, &payload, name, &options, &output),
                quote!(<#payload as #p::Operation>::OPTIONS),
                fields
                    .iter()
                    .map(|field| {
                        let ident = &field.ident;
                        quote!(payload.#ident)
                    })
                    .collect(),
            )
        }
    };

    let ctx_arg = quote_spanned!(context_span=> ctx);
    let call = quote_spanned! {ident_span=>
        #p::assert_send(#fn_ident(#ctx_arg, #(#field_args),*))
    };
    // The handler's `Result<T>`: `T` is the output, the contract's when
    // it handles one (a mismatch is reported on the return type).
    let output_binding = match &payload {
        HandlerPayload::Contract(_) => quote!(<#payload_ty as #p::Operation>::Output),
        HandlerPayload::Generated { .. } => output,
    };
    let result_binding = quote_spanned! {output_span=>
        let result: ::core::result::Result<#output_binding, _> = future.await;
    };
    let finish = quote_spanned!(output_span=> #p::finish(result));
    let (lifetimes, context, erased) = if options.transactional {
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
        ) -> #p::BoxFuture<
            'a,
            ::core::result::Result<::core::option::Option<#p::serde_json::Value>, #p::HandlerFailure>,
        > {
            #p::Box::pin(async move {
                let payload: #payload_ty = #p::decode(payload)?;
                let future = #call;
                #result_binding
                #finish
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

        #output_check

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
    fields: &[PayloadField],
) -> TokenStream {
    let derives = payload_derives(krate);
    let mut docs: Vec<Attribute> = fn_attrs
        .iter()
        .filter(|a| ast::is_doc(a))
        .cloned()
        .collect();
    if docs.is_empty() {
        docs.push(default_doc(name));
    }
    let fields = fields.iter().map(|field| {
        let attrs = &field.attrs;
        let ident = &field.ident;
        let ty = &field.ty;
        // Spanned on the type, so that errors about the field (a missing
        // `Serialize`, say) point at the user's type, not at the attribute.
        let ty_span = ast::first_span(ty);
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

/// The item without what `#[operation]` would have consumed, emitted beside
/// `compile_error!` when expansion fails, so that the rest of the crate (and
/// the IDE) still sees the function or struct.
pub(crate) fn fallback(item: TokenStream) -> TokenStream {
    match syn::parse2::<syn::ItemFn>(item.clone()) {
        Ok(mut function) => {
            for input in &mut function.sig.inputs {
                if let syn::FnArg::Typed(pat_type) = input {
                    ast::take_field_attrs(&mut pat_type.attrs);
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
