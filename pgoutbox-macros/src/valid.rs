//! Checks of the parsed model: the values the grammar of Rust cannot
//! express (names, queues, durations, ranges), the shape of the annotated
//! item, and how options and item fit together. Each check reports on the
//! offending tokens through [`Ctxt`] and goes on, so one compile shows every
//! mistake; what passes comes out as the checked model `expand` generates
//! from.

use std::time::Duration;

use proc_macro2::Span;
use syn::ext::IdentExt as _;
use syn::spanned::Spanned as _;
use syn::{Attribute, Ident, Item, ItemFn, ItemStruct, LitStr, Pat, Path, ReturnType, Type};

use crate::ast::{self, ContextKind, HandlerFn, Input, Param};
use crate::attr::{Args, BackoffArg, Opt, PriorityArg};
use crate::ctxt::Ctxt;

const NAME_GRAMMAR: &str = "expected lower-case segments of `[a-z0-9_]` joined by dots, \
                            e.g. `billing.charge`";

const DURATION_FORM: &str = "expected a number and a unit, e.g. `250ms`, `30s`, `5m`, `1h` or `2d`";

/// A checked `#[operation]`.
pub(crate) struct Operation {
    /// The path of the `pgoutbox` crate.
    pub(crate) krate: Path,
    pub(crate) options: Options,
    pub(crate) target: Target,
}

/// What `#[operation]` generates for.
pub(crate) enum Target {
    Handler(Box<Handler>),
    Contract {
        name: String,
        item: Box<ItemStruct>,
        /// `output = Type`, or `None` for `()`.
        output: Option<Box<Type>>,
    },
}

/// The options of `#[operation]`, as values.
#[derive(Clone, Default)]
pub(crate) struct Options {
    pub(crate) transactional: bool,
    pub(crate) idempotent: bool,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) backoff: Option<(Duration, Duration)>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) queue: Option<LitStr>,
    pub(crate) priority: Option<i16>,
}

impl Options {
    /// Only the options a contract handler adds to its contract's.
    pub(crate) fn handler_side(&self) -> Self {
        Self {
            transactional: self.transactional,
            backoff: self.backoff,
            timeout: self.timeout,
            ..Self::default()
        }
    }
}

/// A checked handler function.
pub(crate) struct Handler {
    /// The function as it will be re-emitted.
    pub(crate) item: ItemFn,
    pub(crate) payload: HandlerPayload,
    /// The first token of the context parameter's type.
    pub(crate) context_span: Span,
    /// The function's name, which errors about the call point at.
    pub(crate) ident_span: Span,
    /// The first token of the return type.
    pub(crate) output_span: Span,
    /// The `T` of the return type when it is written `Result<T>` or
    /// `Result<T, E>` (any path ending in `Result`); `None` otherwise (a
    /// type alias), which the generated code reads as `()`.
    pub(crate) output: Option<Type>,
}

/// Where a handler's payload type comes from.
pub(crate) enum HandlerPayload {
    /// A struct generated from the parameters after the context.
    Generated {
        ident: Ident,
        name: String,
        fields: Vec<PayloadField>,
    },
    /// A contract declared elsewhere, taken whole.
    Contract(Path),
}

/// A handler parameter that becomes a payload field.
pub(crate) struct PayloadField {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
}

/// A checked `#[payload]`.
pub(crate) struct Payload {
    pub(crate) krate: Path,
    pub(crate) item: Item,
}

/// Checks `#[operation]`; `None` when something was reported.
pub(crate) fn operation(args: &Args, input: Input, cx: &Ctxt) -> Option<Operation> {
    if let Some(name) = &args.name {
        check_name(name, cx);
    }
    let options = options(args, cx);
    let krate = krate(args.krate.as_ref());
    let target = match input {
        Input::Handler(handler_fn) => {
            handler(args, *handler_fn, cx).map(|h| Target::Handler(Box::new(h)))
        }
        Input::Struct(item) => contract(args, &item, cx).map(|name| Target::Contract {
            name,
            item,
            output: args.output.as_ref().map(|o| Box::new(o.value.clone())),
        }),
        Input::Other(item) => {
            cx.error_at(
                ast::first_span(&item),
                format!(
                    "`#[operation]` applies to an `async fn` handler or to a payload struct, \
                     not to {}",
                    what(&item)
                ),
            );
            None
        }
    };
    Some(Operation {
        krate,
        options: options?,
        target: target?,
    })
}

/// Checks `#[payload]`.
pub(crate) fn payload(krate: Option<&Opt<Path>>, input: Input, cx: &Ctxt) -> Option<Payload> {
    let item = match input {
        Input::Struct(item) => Item::Struct(*item),
        Input::Other(item) if matches!(*item, Item::Enum(_)) => *item,
        Input::Other(item) => {
            report_payload_target(&item, cx);
            return None;
        }
        Input::Handler(handler) => {
            report_payload_target(&Item::Fn(handler.item), cx);
            return None;
        }
    };
    Some(Payload {
        krate: self::krate(krate),
        item,
    })
}

fn report_payload_target(item: &Item, cx: &Ctxt) {
    cx.error_at(
        ast::first_span(item),
        format!(
            "`#[payload]` applies to a struct or an enum used inside an operation payload, \
             not to {}",
            what(item)
        ),
    );
}

fn what(item: &Item) -> &'static str {
    match item {
        Item::Fn(_) => "a function",
        Item::Impl(_) => "an impl block",
        Item::Trait(_) => "a trait",
        Item::Enum(_) => "an enum",
        Item::Mod(_) => "a module",
        _ => "this item",
    }
}

fn krate(krate: Option<&Opt<Path>>) -> Path {
    krate.map_or_else(|| syn::parse_quote!(::pgoutbox), |o| o.value.clone())
}

/// Whether `name` is lower-case segments of `[a-z0-9_]` joined by dots.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// Reports a bad operation name inside its string literal.
fn check_name(lit: &LitStr, cx: &Ctxt) {
    let name = lit.value();
    if name.is_empty() {
        cx.error_at(
            lit.span(),
            format!("the operation name is empty: {NAME_GRAMMAR}"),
        );
    } else if !is_valid_name(&name) {
        cx.error_at(
            lit.span(),
            format!("invalid operation name `{name}`: {NAME_GRAMMAR}"),
        );
    }
}

/// A problem already reported to [`Ctxt`].
struct Reported;

/// The options as values; `None` when a value was reported.
fn options(args: &Args, cx: &Ctxt) -> Option<Options> {
    // Every value is checked before the first `?`, so that all are reported.
    let max_attempts = args
        .max_attempts
        .as_ref()
        .map(|o| max_attempts(&o.value, cx));
    let priority = args.priority.as_ref().map(|o| priority(&o.value, cx));
    let timeout = args.timeout.as_ref().map(|o| duration(&o.value, cx));
    let queue = args.queue.as_ref().map(|o| queue(&o.value, cx));
    let backoff = args.backoff.as_ref().map(|o| backoff(o.span, &o.value, cx));
    Some(Options {
        transactional: args.transactional.is_some(),
        idempotent: args.idempotent.is_some(),
        max_attempts: max_attempts.transpose().ok()?,
        backoff: backoff.transpose().ok()?,
        timeout: timeout.transpose().ok()?,
        queue: queue.transpose().ok()?,
        priority: priority.transpose().ok()?,
    })
}

fn max_attempts(lit: &syn::LitInt, cx: &Ctxt) -> Result<u32, Reported> {
    match lit.base10_parse::<u32>() {
        Ok(n) if n >= 1 && i32::try_from(n).is_ok() => Ok(n),
        _ => {
            cx.error_spanned_by(
                lit,
                "`max_attempts` must be an integer from 1 to 2147483647",
            );
            Err(Reported)
        }
    }
}

fn priority(arg: &PriorityArg, cx: &Ctxt) -> Result<i16, Reported> {
    let value = arg
        .lit
        .base10_parse::<i32>()
        .ok()
        .map(|v| if arg.negative { -v } else { v })
        .and_then(|v| i16::try_from(v).ok());
    value.ok_or_else(|| {
        cx.error_spanned_by(
            &arg.lit,
            "`priority` must be an integer from -32768 to 32767",
        );
        Reported
    })
}

/// Queue names follow the same grammar as operation names.
fn queue(lit: &LitStr, cx: &Ctxt) -> Result<LitStr, Reported> {
    let queue = lit.value();
    if is_valid_name(&queue) {
        Ok(lit.clone())
    } else {
        cx.error_at(
            lit.span(),
            format!("invalid queue name `{queue}`: {NAME_GRAMMAR}"),
        );
        Err(Reported)
    }
}

/// Parses a positive duration such as `"250ms"`, `"30s"`, `"5m"`, `"1h"`,
/// `"2d"` or `"1h 30m"`: the form the settings and the command line accept.
fn duration(lit: &LitStr, cx: &Ctxt) -> Result<Duration, Reported> {
    let text = lit.value();
    let message = match humantime::parse_duration(&text) {
        Ok(duration) if !duration.is_zero() => return Ok(duration),
        Ok(_) => format!("duration `{text}` must be longer than zero"),
        Err(_) => format!("invalid duration `{text}`: {DURATION_FORM}"),
    };
    cx.error_at(lit.span(), message);
    Err(Reported)
}

fn backoff(span: Span, arg: &BackoffArg, cx: &Ctxt) -> Result<(Duration, Duration), Reported> {
    let (Some(initial_lit), Some(max_lit)) = (&arg.initial, &arg.max) else {
        cx.error_at(
            span,
            "`backoff` needs both bounds: `backoff(initial = \"1s\", max = \"10m\")`",
        );
        return Err(Reported);
    };
    let initial = duration(initial_lit, cx);
    let max = duration(max_lit, cx);
    let (initial, max) = (initial?, max?);
    if max < initial {
        cx.error_spanned_by(max_lit, "`max` must not be shorter than `initial`");
        return Err(Reported);
    }
    Ok((initial, max))
}

/// Checks a contract struct; returns its operation name.
fn contract(args: &Args, item: &ItemStruct, cx: &Ctxt) -> Option<String> {
    if args.name.is_none() {
        cx.error_spanned_by(
            &item.ident,
            "missing operation name: `#[operation(\"billing.charge\")]`",
        );
    }
    if let Some(contract) = &args.contract {
        cx.error_at(
            contract.span,
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
    args.name.as_ref().map(LitStr::value)
}

/// Checks a handler function: the name and options that concern it, its
/// signature, then each parameter.
fn handler(args: &Args, handler: HandlerFn, cx: &Ctxt) -> Option<Handler> {
    let HandlerFn {
        item,
        receiver,
        params,
    } = handler;
    let ident_span = item.sig.ident.span();
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
    if let Some(contract) = &args.contract {
        for (option, span) in args.publish_side() {
            cx.error_at(
                span,
                format!(
                    "`{option}` belongs to the contract `{}`: set it there",
                    ast::path_string(&contract.value)
                ),
            );
        }
        if let Some(payload) = &args.payload {
            cx.error_at(
                payload.span,
                "`payload` names a generated struct; a contract handler generates none",
            );
        }
    }
    let output_span = signature(&item, cx);
    if let Some(output) = &args.output {
        cx.error_at(
            output.span,
            "a handler's output is the `T` of the `Result<T>` it returns: remove `output`",
        );
    }
    if let Some(receiver) = receiver {
        cx.error_spanned_by(
            receiver,
            "operation handlers cannot take `self`: use a free `async fn`",
        );
    }

    let expected = if args.transactional.is_some() {
        ContextKind::Transactional
    } else {
        ContextKind::Plain
    };
    let mut params = params.into_iter();
    let Some(context) = params.next() else {
        cx.error_at(
            item.sig.paren_token.span.join(),
            missing_context_message(expected),
        );
        return None;
    };
    let context_ok = check_context(&context, expected, cx);
    let params: Vec<Param> = params
        .filter(|param| {
            if param.context.is_some() {
                cx.error_spanned_by(&param.ty, "the handler context must be the first parameter");
            }
            param.context.is_none()
        })
        .collect();

    let payload = if let Some(contract) = &args.contract {
        contract_param(&item, &params, context_ok, cx);
        HandlerPayload::Contract(contract.value.clone())
    } else {
        HandlerPayload::Generated {
            ident: args
                .payload
                .as_ref()
                .map_or_else(|| upper_camel(&item.sig.ident), |o| o.value.clone()),
            name: args.name.as_ref().map(LitStr::value).unwrap_or_default(),
            fields: params
                .into_iter()
                .filter_map(|param| payload_field(param, cx))
                .collect(),
        }
    };
    let output = result_ok_type(&item.sig.output);
    context_ok.then(|| Handler {
        output,
        context_span: ast::first_span(&context.ty),
        item,
        payload,
        ident_span,
        output_span,
    })
}

/// The `T` of a return type written `Result<T>` or `Result<T, E>` (a path
/// whose last segment is `Result`).
fn result_ok_type(output: &ReturnType) -> Option<Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let Type::Path(path) = &**ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args.iter().find_map(|arg| match arg {
        syn::GenericArgument::Type(ty) => Some(ty.clone()),
        _ => None,
    })
}

/// Checks what the signature itself allows; returns the span of the return
/// type (the function's name when there is none).
fn signature(item: &ItemFn, cx: &Ctxt) -> Span {
    let sig = &item.sig;
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
    match &sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => {
            cx.error_at(
                sig.paren_token.span.close(),
                "operation handlers return `Result<()>`: add `-> Result<()>` \
                 (any `Result<(), E>` whose `E` converts into `HandlerError`)",
            );
            sig.ident.span()
        }
    }
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

/// Checks the first parameter against the context the options call for.
fn check_context(param: &Param, expected: ContextKind, cx: &Ctxt) -> bool {
    not_a_field(param, cx);
    let Some(found) = param.context else {
        cx.error_spanned_by(&param.ty, missing_context_message(expected));
        return false;
    };
    let ty = &param.ty;
    match (found.kind, expected) {
        (ContextKind::Plain, ContextKind::Transactional) => cx.error_spanned_by(
            ty,
            "a `transactional` handler takes `&mut TxContext<'_>`, not `Context`",
        ),
        (ContextKind::Transactional, ContextKind::Plain) => cx.error_spanned_by(
            ty,
            "this handler takes `TxContext`: add the `transactional` option, or take `&mut Context`",
        ),
        _ if !found.by_mut_ref => cx.error_spanned_by(
            ty,
            match found.kind {
                ContextKind::Plain => "the context is taken as `&mut Context`",
                ContextKind::Transactional => "the context is taken as `&mut TxContext<'_>`",
            },
        ),
        _ => {}
    }
    true
}

/// The context and a contract handler's payload are not payload fields:
/// their doc comments are dropped, and `#[serde]` / `#[schemars]` there
/// would describe nothing.
fn not_a_field(param: &Param, cx: &Ctxt) {
    for attr in param.attrs.iter().filter(|a| !ast::is_doc(a)) {
        cx.error_spanned_by(
            attr,
            "`#[serde(…)]` and `#[schemars(…)]` describe payload fields; this parameter is not one",
        );
    }
}

/// A contract handler takes exactly one parameter after the context.
fn contract_param(item: &ItemFn, params: &[Param], context_ok: bool, cx: &Ctxt) {
    match params {
        [] if context_ok => cx.error_at(
            item.sig.paren_token.span.close(),
            "a contract handler takes the payload after the context: `(ctx, payload: Contract)`",
        ),
        [payload, extra @ ..] => {
            not_a_field(payload, cx);
            for Param { pat, ty, .. } in extra {
                cx.error_spanned_by(
                    quote::quote!(#pat: #ty),
                    "a contract handler takes the context and the payload only: `(ctx, payload: Contract)`",
                );
            }
        }
        [] => {}
    }
}

/// Checks a parameter that becomes a field of the generated payload.
fn payload_field(param: Param, cx: &Ctxt) -> Option<PayloadField> {
    let ident = match &param.pat {
        Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => Some(pat.ident.clone()),
        _ => None,
    };
    let Some(ident) = ident else {
        cx.error_spanned_by(
            &param.pat,
            "payload parameters must be plain names: each becomes a field of the payload struct",
        );
        return None;
    };
    if let Some(problem) = borrowed(quote::ToTokens::to_token_stream(&param.ty)) {
        cx.error_spanned_by(&param.ty, problem);
        return None;
    }
    Some(PayloadField {
        attrs: param.attrs,
        ident,
        ty: param.ty,
    })
}

/// Why a payload field's type cannot be decoded from a stored payload.
fn borrowed(tokens: proc_macro2::TokenStream) -> Option<&'static str> {
    use proc_macro2::TokenTree;
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
fn upper_camel(ident: &Ident) -> Ident {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_duration(text: &str) -> (Option<Duration>, syn::Result<()>) {
        let cx = Ctxt::default();
        let lit = LitStr::new(text, Span::call_site());
        (duration(&lit, &cx).ok(), cx.check())
    }

    #[test]
    fn durations_take_the_units_of_the_settings() {
        for (text, expected) in [
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_mins(5)),
            ("1h", Duration::from_hours(1)),
            ("2d", Duration::from_hours(48)),
            ("1h 30m", Duration::from_mins(90)),
        ] {
            assert_eq!(parse_duration(text).0, Some(expected), "{text}");
        }
    }

    #[test]
    fn bad_durations_say_the_accepted_form() {
        for text in ["", "ten seconds", "30", "-1s", "0s"] {
            let (value, errors) = parse_duration(text);
            assert_eq!(value, None, "{text}");
            let message = errors.expect_err(text).to_string();
            assert!(
                message.contains("`30s`, `5m`, `1h` or `2d`")
                    || message.contains("longer than zero"),
                "{text}: {message}"
            );
        }
    }

    #[test]
    fn names_are_dotted_lower_case_segments() {
        assert!(is_valid_name("billing.charge_2"));
        for bad in ["", "Billing", "a..b", ".a", "a.", "a-b"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
