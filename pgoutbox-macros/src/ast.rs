//! The annotated item as a typed model: a handler function, a contract
//! struct, or something else (which `valid` rejects). Parsing checks
//! nothing but Rust's own syntax; the model keeps the user's tokens so that
//! `valid` and `expand` can point at them.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt as _;
use syn::{Attribute, FnArg, Item, ItemFn, ItemStruct, Pat, Path, Type};

/// What an attribute was put on.
pub(crate) enum Input {
    /// A function: an operation handler.
    Handler(Box<HandlerFn>),
    /// A struct: a publish-only contract, or a nested payload type.
    Struct(Box<ItemStruct>),
    /// Anything else: an enum (a nested payload type only), or an item
    /// neither attribute applies to.
    Other(Box<Item>),
}

/// A function, its parameter attributes already moved out.
pub(crate) struct HandlerFn {
    /// The function as it will be re-emitted.
    pub(crate) item: ItemFn,
    /// The `self` of a method, which handlers cannot take.
    pub(crate) receiver: Option<syn::token::SelfValue>,
    /// Every other parameter, in order.
    pub(crate) params: Vec<Param>,
}

/// A typed parameter of the function.
pub(crate) struct Param {
    /// The attributes that describe a payload field (see [`is_field_attr`]),
    /// moved out of the function, where rustc would reject or ignore them.
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) pat: Pat,
    pub(crate) ty: Type,
    /// Whether the type names a handler context, and how.
    pub(crate) context: Option<ContextRef>,
}

/// Which context a parameter's type names.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContextKind {
    Plain,
    Transactional,
}

/// A parameter whose type names `Context` or `TxContext`, however qualified.
#[derive(Clone, Copy)]
pub(crate) struct ContextRef {
    pub(crate) kind: ContextKind,
    pub(crate) by_mut_ref: bool,
}

/// Parses the item; `Err` only when it is not Rust at all.
pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Input> {
    Ok(match syn::parse2::<Item>(tokens)? {
        Item::Fn(item) => Input::Handler(Box::new(handler(item))),
        Item::Struct(item) => Input::Struct(Box::new(item)),
        other => Input::Other(Box::new(other)),
    })
}

fn handler(mut item: ItemFn) -> HandlerFn {
    let mut receiver = None;
    let mut params = Vec::new();
    for input in &mut item.sig.inputs {
        match input {
            FnArg::Receiver(r) => receiver = Some(r.self_token),
            FnArg::Typed(pat_type) => params.push(Param {
                attrs: take_field_attrs(&mut pat_type.attrs),
                pat: (*pat_type.pat).clone(),
                ty: (*pat_type.ty).clone(),
                context: context_ref(&pat_type.ty),
            }),
        }
    }
    HandlerFn {
        item,
        receiver,
        params,
    }
}

/// Doc comments, `#[serde(…)]` and `#[schemars(…)]`: what describes a
/// payload field, and so what `#[operation]` consumes from a parameter.
pub(crate) fn is_field_attr(attr: &Attribute) -> bool {
    is_doc(attr) || attr.path().is_ident("serde") || attr.path().is_ident("schemars")
}

pub(crate) fn is_doc(attr: &Attribute) -> bool {
    attr.path().is_ident("doc")
}

/// Moves the field attributes out of a parameter's attributes.
pub(crate) fn take_field_attrs(attrs: &mut Vec<Attribute>) -> Vec<Attribute> {
    let (moved, kept) = std::mem::take(attrs).into_iter().partition(is_field_attr);
    *attrs = kept;
    moved
}

fn context_ref(ty: &Type) -> Option<ContextRef> {
    let (inner, by_mut_ref) = match ty {
        Type::Reference(reference) => (&*reference.elem, reference.mutability.is_some()),
        other => (other, false),
    };
    let Type::Path(path) = inner else {
        return None;
    };
    let kind = match path
        .path
        .segments
        .last()?
        .ident
        .unraw()
        .to_string()
        .as_str()
    {
        "Context" => ContextKind::Plain,
        "TxContext" => ContextKind::Transactional,
        _ => return None,
    };
    Some(ContextRef { kind, by_mut_ref })
}

/// The span of the first token after any outer attributes: where an error
/// about an item or a type starts.
pub(crate) fn first_span(tokens: &impl ToTokens) -> Span {
    let mut tokens = tokens.to_token_stream().into_iter();
    while let Some(token) = tokens.next() {
        match token {
            TokenTree::Punct(p) if p.as_char() == '#' => {
                // The attribute's `[…]`.
                tokens.next();
            }
            other => return other.span(),
        }
    }
    Span::call_site()
}

/// A path as the user wrote it, without the spaces of `to_string`.
pub(crate) fn path_string(path: &Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}
