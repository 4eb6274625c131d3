//! The annotated item as a typed model: a handler function or a contract
//! struct. Building it checks everything the attribute requires of the
//! item's shape; every problem is reported on the offending tokens.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens as _;
use syn::ext::IdentExt as _;
use syn::spanned::Spanned as _;
use syn::{Attribute, FnArg, Ident, Item, ItemFn, ItemStruct, Pat, ReturnType, Type};

use crate::attr::Args;
use crate::ctxt::Ctxt;

/// What `#[operation]` was put on.
pub(crate) enum Input {
    /// An `async fn` handler.
    Handler(Box<HandlerFn>),
    /// A struct declaring a publish-only contract.
    Contract(Box<ItemStruct>),
}

/// A handler function, its parameter attributes already moved out.
pub(crate) struct HandlerFn {
    /// The function as it will be re-emitted.
    pub(crate) item: ItemFn,
    /// The context parameter's type.
    pub(crate) context_ty: Type,
    /// The parameters after the context.
    pub(crate) fields: Vec<PayloadField>,
    /// The span that errors about the function as a whole point at.
    pub(crate) ident_span: Span,
    /// The first token of the return type.
    pub(crate) output_span: Span,
}

/// A handler parameter that becomes a payload field.
pub(crate) struct PayloadField {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
}

/// Which context a parameter's type names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ContextKind {
    Plain,
    Transactional,
}

/// Parses the item. `Err` only when it is not Rust at all; shape errors go
/// to `cx` and still return a model when one can be built.
pub(crate) fn parse(tokens: TokenStream, args: &Args, cx: &Ctxt) -> syn::Result<Option<Input>> {
    let item: Item = syn::parse2(tokens)?;
    Ok(match item {
        Item::Fn(item) => handler(item, args, cx).map(|h| Input::Handler(Box::new(h))),
        Item::Struct(item) => {
            contract(&item, args, cx);
            Some(Input::Contract(Box::new(item)))
        }
        other => {
            let what = match &other {
                Item::Impl(_) => "an impl block",
                Item::Trait(_) => "a trait",
                Item::Enum(_) => "an enum",
                Item::Mod(_) => "a module",
                _ => "this item",
            };
            cx.error_at(
                first_span(&other),
                format!(
                    "`#[operation]` applies to an `async fn` handler or to a payload struct, not to {what}"
                ),
            );
            None
        }
    })
}

fn first_span(item: &Item) -> Span {
    item.to_token_stream()
        .into_iter()
        .find(|t| !matches!(t, TokenTree::Punct(p) if p.as_char() == '#'))
        .map_or_else(Span::call_site, |t| t.span())
}

fn contract(item: &ItemStruct, args: &Args, cx: &Ctxt) {
    if args.name.is_none() {
        cx.error_spanned_by(
            &item.ident,
            "missing operation name: `#[operation(\"billing.charge\")]`",
        );
    }
    if let Some((span, _)) = &args.contract {
        cx.error_at(
            *span,
            "`contract` is for handler functions; this struct *is* a contract",
        );
    }
    for (option, span) in args.handler_side() {
        cx.error_at(
            span,
            format!(
                "`{option}` belongs to the handler: put it on the function annotated \
                 `#[operation(contract = {})]`",
                item.ident
            ),
        );
    }
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        cx.error_spanned_by(
            &item.generics,
            "an operation payload cannot be generic: it is stored as JSON and decoded into one concrete type",
        );
    }
    if let syn::Fields::Unnamed(fields) = &item.fields {
        cx.error_spanned_by(fields, "an operation payload needs named fields");
    }
}

#[allow(clippy::too_many_lines)] // The checks read best in signature order.
fn handler(mut item: ItemFn, args: &Args, cx: &Ctxt) -> Option<HandlerFn> {
    let sig = &item.sig;
    let ident_span = sig.ident.span();
    match (&args.name, &args.contract) {
        (None, None) => cx.error_at(
            ident_span,
            "missing operation name: `#[operation(\"billing.charge\")]`, or \
             `#[operation(contract = Type)]` to handle a contract declared elsewhere",
        ),
        (Some(name), Some(_)) => cx.error_spanned_by(
            name,
            "a handler of a contract takes its name from the contract: remove the name",
        ),
        _ => {}
    }
    if let Some((_, path)) = &args.contract {
        for (option, span) in args.publish_side() {
            cx.error_at(
                span,
                format!(
                    "`{option}` belongs to the contract `{}`: set it there",
                    path.to_token_stream().to_string().replace(' ', "")
                ),
            );
        }
        if let Some((span, _)) = &args.payload {
            cx.error_at(
                *span,
                "`payload` names a generated struct; a contract handler generates none",
            );
        }
    }
    if sig.asyncness.is_none() {
        cx.error_spanned_by(sig.fn_token, "operation handlers must be `async fn`");
    }
    if let Some(constness) = &sig.constness {
        cx.error_spanned_by(constness, "operation handlers cannot be `const fn`");
    }
    if let syn::Safety::Unsafe(token) = &sig.safety {
        cx.error_spanned_by(token, "operation handlers cannot be `unsafe fn`");
    }
    if let Some(abi) = &sig.abi {
        cx.error_spanned_by(abi, "operation handlers cannot have an explicit ABI");
    }
    if let Some(variadic) = &sig.variadic {
        cx.error_spanned_by(variadic, "operation handlers cannot be variadic");
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        cx.error_spanned_by(
            &sig.generics,
            "operation handlers cannot be generic: the payload is stored as JSON and decoded into one concrete type",
        );
    }
    let output_span = match &sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => {
            cx.error_at(
                sig.paren_token.span.close(),
                "operation handlers return `Result<()>`: add `-> Result<()>` \
                 (any `Result<(), E>` whose `E` converts into `HandlerError`)",
            );
            ident_span
        }
    };

    let expected_context = if args.transactional.is_some() {
        ContextKind::Transactional
    } else {
        ContextKind::Plain
    };
    let mut context_ty = None;
    let mut fields = Vec::new();
    let mut receiver_seen = false;
    let contract_handler = args.contract.is_some();
    let n_inputs = item.sig.inputs.len();
    for (index, input) in item.sig.inputs.iter_mut().enumerate() {
        let pat_type = match input {
            FnArg::Receiver(receiver) => {
                cx.error_spanned_by(
                    receiver.self_token,
                    "operation handlers cannot take `self`: use a free `async fn`",
                );
                receiver_seen = true;
                continue;
            }
            FnArg::Typed(pat_type) => pat_type,
        };
        let kind = context_kind(&pat_type.ty);
        let position = if receiver_seen { index - 1 } else { index };
        if position == 0 {
            pat_type.attrs.retain(|a| !a.path().is_ident("doc"));
            match kind {
                Some((found, by_mut_ref)) => {
                    check_context(&pat_type.ty, found, by_mut_ref, expected_context, cx);
                    context_ty = Some((*pat_type.ty).clone());
                }
                None => {
                    cx.error_spanned_by(&pat_type.ty, missing_context_message(expected_context));
                }
            }
            continue;
        }
        if kind.is_some() {
            cx.error_spanned_by(
                &pat_type.ty,
                "the handler context must be the first parameter",
            );
            continue;
        }
        if contract_handler {
            if position > 1 {
                cx.error_spanned_by(
                    &*pat_type,
                    "a contract handler takes the context and the payload only: `(ctx, payload: Contract)`",
                );
            }
            pat_type.attrs.retain(|a| !a.path().is_ident("doc"));
            fields.push(PayloadField {
                attrs: Vec::new(),
                ident: Ident::new("payload", pat_type.pat.span()),
                ty: (*pat_type.ty).clone(),
            });
            continue;
        }
        let ident = match &*pat_type.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                Some(pat.ident.clone())
            }
            _ => None,
        };
        let Some(ident) = ident else {
            cx.error_spanned_by(
                &pat_type.pat,
                "payload parameters must be plain names: each becomes a field of the payload struct",
            );
            continue;
        };
        if let Some(problem) = borrowed(pat_type.ty.to_token_stream()) {
            cx.error_spanned_by(&pat_type.ty, problem);
            continue;
        }
        // Doc comments, `serde` and `schemars` attributes describe the field;
        // rustc would reject them (docs) or ignore them on a parameter.
        let (moved, kept): (Vec<Attribute>, Vec<Attribute>) = std::mem::take(&mut pat_type.attrs)
            .into_iter()
            .partition(|a| {
                a.path().is_ident("doc")
                    || a.path().is_ident("serde")
                    || a.path().is_ident("schemars")
            });
        pat_type.attrs = kept;
        fields.push(PayloadField {
            attrs: moved,
            ident,
            ty: (*pat_type.ty).clone(),
        });
    }
    if n_inputs == usize::from(receiver_seen) {
        cx.error_at(
            item.sig.paren_token.span.join(),
            missing_context_message(expected_context),
        );
    }
    if contract_handler && fields.is_empty() && context_ty.is_some() {
        cx.error_at(
            item.sig.paren_token.span.close(),
            "a contract handler takes the payload after the context: `(ctx, payload: Contract)`",
        );
    }
    Some(HandlerFn {
        context_ty: context_ty?,
        item,
        fields,
        ident_span,
        output_span,
    })
}

fn missing_context_message(expected: ContextKind) -> &'static str {
    match expected {
        ContextKind::Plain => {
            "missing handler context: the first parameter must be `ctx: &mut Context` \
             (or `ctx: &mut TxContext<'_>` with the `transactional` option)"
        }
        ContextKind::Transactional => {
            "missing handler context: the first parameter of a `transactional` handler \
             must be `ctx: &mut TxContext<'_>`"
        }
    }
}

fn check_context(
    ty: &Type,
    found: ContextKind,
    by_mut_ref: bool,
    expected: ContextKind,
    cx: &Ctxt,
) {
    match (found, expected) {
        (ContextKind::Plain, ContextKind::Transactional) => cx.error_spanned_by(
            ty,
            "a `transactional` handler takes `&mut TxContext<'_>`, not `Context`",
        ),
        (ContextKind::Transactional, ContextKind::Plain) => cx.error_spanned_by(
            ty,
            "this handler takes `TxContext`: add the `transactional` option, or take `&mut Context`",
        ),
        _ if !by_mut_ref => cx.error_spanned_by(
            ty,
            match found {
                ContextKind::Plain => "the context is taken as `&mut Context`",
                ContextKind::Transactional => "the context is taken as `&mut TxContext<'_>`",
            },
        ),
        _ => {}
    }
}

/// Whether `ty` names a context (`Context` or `TxContext`, however
/// qualified), and whether it is taken by `&mut`.
fn context_kind(ty: &Type) -> Option<(ContextKind, bool)> {
    let (inner, by_mut_ref) = match ty {
        Type::Reference(reference) => (&*reference.elem, reference.mutability.is_some()),
        other => (other, false),
    };
    let Type::Path(path) = inner else {
        return None;
    };
    let last = path.path.segments.last()?;
    match last.ident.unraw().to_string().as_str() {
        "Context" => Some((ContextKind::Plain, by_mut_ref)),
        "TxContext" => Some((ContextKind::Transactional, by_mut_ref)),
        _ => None,
    }
}

/// Why a payload field's type cannot be decoded from a stored payload.
fn borrowed(tokens: TokenStream) -> Option<&'static str> {
    for token in tokens {
        match token {
            TokenTree::Punct(p) if p.as_char() == '&' => {
                return Some(
                    "payload fields must be owned: a borrowed value cannot be decoded from a \
                     stored payload; use an owned type such as `String` or `Vec<T>`",
                );
            }
            TokenTree::Punct(p) if p.as_char() == '\'' => {
                return Some(
                    "payload fields cannot borrow: remove the lifetime and use an owned type",
                );
            }
            TokenTree::Ident(ident) if ident == "impl" || ident == "dyn" => {
                return Some("payload fields need a concrete type that can be serialized");
            }
            TokenTree::Group(group) => {
                if let Some(problem) = borrowed(group.stream()) {
                    return Some(problem);
                }
            }
            _ => {}
        }
    }
    None
}

/// `send_receipt` → `SendReceipt`.
pub(crate) fn upper_camel(ident: &Ident) -> Ident {
    let name = ident.unraw().to_string();
    let camel: String = name
        .split('_')
        .filter(|s| !s.is_empty())
        .map(|segment| {
            let mut chars = segment.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    Ident::new(&camel, ident.span())
}
