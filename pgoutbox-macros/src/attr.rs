//! Parsing the attribute's arguments: `"name", option, option = value, …`.

use proc_macro2::Span;
use syn::ext::IdentExt as _;
use syn::parse::{ParseStream, Parser as _};
use syn::{Ident, LitInt, LitStr, Path, Token};

use crate::ctxt::Ctxt;
use crate::valid;

mod kw {
    syn::custom_keyword!(transactional);
    syn::custom_keyword!(idempotent);
    syn::custom_keyword!(max_attempts);
    syn::custom_keyword!(backoff);
    syn::custom_keyword!(initial);
    syn::custom_keyword!(max);
    syn::custom_keyword!(timeout);
    syn::custom_keyword!(queue);
    syn::custom_keyword!(priority);
    syn::custom_keyword!(payload);
    syn::custom_keyword!(contract);
}

/// A duration option, validated, with the literal it came from.
#[derive(Clone)]
pub(crate) struct DurationArg {
    pub(crate) lit: LitStr,
    pub(crate) millis: u64,
}

/// The parsed arguments. Each option keeps the span of its keyword so that
/// later checks can point at it.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) name: Option<LitStr>,
    pub(crate) contract: Option<(Span, Path)>,
    pub(crate) transactional: Option<Span>,
    pub(crate) idempotent: Option<Span>,
    pub(crate) max_attempts: Option<(Span, u32)>,
    pub(crate) backoff: Option<(Span, DurationArg, DurationArg)>,
    pub(crate) timeout: Option<(Span, DurationArg)>,
    pub(crate) queue: Option<(Span, LitStr)>,
    pub(crate) priority: Option<(Span, i16)>,
    pub(crate) payload: Option<(Span, Ident)>,
    pub(crate) krate: Option<(Span, Path)>,
}

impl Args {
    /// The options that belong to the published row (and so to a contract).
    pub(crate) fn publish_side(&self) -> Vec<(&'static str, Span)> {
        let mut out = Vec::new();
        if let Some(span) = self.idempotent {
            out.push(("idempotent", span));
        }
        if let Some((span, _)) = self.max_attempts {
            out.push(("max_attempts", span));
        }
        if let Some((span, _)) = &self.queue {
            out.push(("queue", *span));
        }
        if let Some((span, _)) = self.priority {
            out.push(("priority", span));
        }
        out
    }

    /// The options that only a handler can honour.
    pub(crate) fn handler_side(&self) -> Vec<(&'static str, Span)> {
        let mut out = Vec::new();
        if let Some(span) = self.transactional {
            out.push(("transactional", span));
        }
        if let Some((span, ..)) = &self.backoff {
            out.push(("backoff", *span));
        }
        if let Some((span, _)) = &self.timeout {
            out.push(("timeout", *span));
        }
        if let Some((span, _)) = &self.payload {
            out.push(("payload", *span));
        }
        out
    }
}

/// Parses the arguments; syntax errors abort, value errors are collected.
pub(crate) fn parse(tokens: proc_macro2::TokenStream, cx: &Ctxt) -> syn::Result<Args> {
    let parser = |input: ParseStream| parse_args(input, cx);
    parser.parse2(tokens)
}

fn duplicate<T>(slot: Option<&T>, span: Span, option: &str, cx: &Ctxt) {
    if slot.is_some() {
        cx.error_at(span, format!("duplicate option `{option}`"));
    }
}

#[allow(clippy::too_many_lines)] // One arm per option reads better than a table of closures.
fn parse_args(input: ParseStream, cx: &Ctxt) -> syn::Result<Args> {
    let mut args = Args::default();
    let mut first = true;
    while !input.is_empty() {
        let lookahead = input.lookahead1();
        if first && lookahead.peek(LitStr) {
            let name: LitStr = input.parse()?;
            valid::check_name(&name, cx);
            args.name = Some(name);
        } else if lookahead.peek(kw::transactional) {
            let kw: kw::transactional = input.parse()?;
            duplicate(args.transactional.as_ref(), kw.span, "transactional", cx);
            args.transactional = Some(kw.span);
        } else if lookahead.peek(kw::idempotent) {
            let kw: kw::idempotent = input.parse()?;
            duplicate(args.idempotent.as_ref(), kw.span, "idempotent", cx);
            args.idempotent = Some(kw.span);
        } else if lookahead.peek(kw::max_attempts) {
            let kw: kw::max_attempts = input.parse()?;
            input.parse::<Token![=]>()?;
            let lit: LitInt = input.parse()?;
            duplicate(args.max_attempts.as_ref(), kw.span, "max_attempts", cx);
            match lit.base10_parse::<u32>() {
                Ok(n) if n >= 1 && i32::try_from(n).is_ok() => {
                    args.max_attempts = Some((kw.span, n));
                }
                _ => cx.error_spanned_by(
                    &lit,
                    "`max_attempts` must be an integer from 1 to 2147483647",
                ),
            }
        } else if lookahead.peek(kw::backoff) {
            let kw: kw::backoff = input.parse()?;
            let content;
            syn::parenthesized!(content in input);
            duplicate(args.backoff.as_ref(), kw.span, "backoff", cx);
            if let Some((initial, max)) = parse_backoff(&content, kw.span, cx)? {
                args.backoff = Some((kw.span, initial, max));
            }
        } else if lookahead.peek(kw::timeout) {
            let kw: kw::timeout = input.parse()?;
            input.parse::<Token![=]>()?;
            let lit: LitStr = input.parse()?;
            duplicate(args.timeout.as_ref(), kw.span, "timeout", cx);
            if let Some(d) = valid::duration(&lit, cx) {
                args.timeout = Some((kw.span, d));
            }
        } else if lookahead.peek(kw::queue) {
            let kw: kw::queue = input.parse()?;
            input.parse::<Token![=]>()?;
            let lit: LitStr = input.parse()?;
            duplicate(args.queue.as_ref(), kw.span, "queue", cx);
            valid::check_queue(&lit, cx);
            args.queue = Some((kw.span, lit));
        } else if lookahead.peek(kw::priority) {
            let kw: kw::priority = input.parse()?;
            input.parse::<Token![=]>()?;
            let negative = input.parse::<Option<Token![-]>>()?.is_some();
            let lit: LitInt = input.parse()?;
            duplicate(args.priority.as_ref(), kw.span, "priority", cx);
            let value = lit
                .base10_parse::<i32>()
                .ok()
                .map(|v| if negative { -v } else { v })
                .and_then(|v| i16::try_from(v).ok());
            match value {
                Some(v) => args.priority = Some((kw.span, v)),
                None => {
                    cx.error_spanned_by(&lit, "`priority` must be an integer from -32768 to 32767");
                }
            }
        } else if lookahead.peek(kw::payload) {
            let kw: kw::payload = input.parse()?;
            input.parse::<Token![=]>()?;
            let ident: Ident = input.parse()?;
            duplicate(args.payload.as_ref(), kw.span, "payload", cx);
            args.payload = Some((kw.span, ident));
        } else if lookahead.peek(kw::contract) {
            let kw: kw::contract = input.parse()?;
            input.parse::<Token![=]>()?;
            let path: Path = input.parse()?;
            duplicate(args.contract.as_ref(), kw.span, "contract", cx);
            args.contract = Some((kw.span, path));
        } else if lookahead.peek(Token![crate]) {
            let kw: Token![crate] = input.parse()?;
            input.parse::<Token![=]>()?;
            let path: Path = input.parse()?;
            duplicate(args.krate.as_ref(), kw.span, "crate", cx);
            args.krate = Some((kw.span, path));
        } else if first && looks_like_a_non_literal_name(input) {
            return Err(syn::Error::new(
                input.span(),
                "the operation name must be a string literal, e.g. `#[operation(\"billing.charge\")]`",
            ));
        } else {
            return Err(lookahead.error());
        }
        first = false;
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(args)
}

/// A constant, a macro call, a path or a non-string literal where the name
/// should be; a lower-case word followed by `=`, `,` or nothing is taken for
/// a misspelt option instead, so that the error lists the options.
fn looks_like_a_non_literal_name(input: ParseStream) -> bool {
    if input.peek(syn::Lit) {
        return true;
    }
    let fork = input.fork();
    let Ok(ident) = fork.call(Ident::parse_any) else {
        return false;
    };
    let word = ident.unraw().to_string();
    let option_like = word.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        && (fork.is_empty() || fork.peek(Token![=]) || fork.peek(Token![,]));
    !option_like
}

fn parse_backoff(
    content: ParseStream,
    span: Span,
    cx: &Ctxt,
) -> syn::Result<Option<(DurationArg, DurationArg)>> {
    let mut initial = None;
    let mut max = None;
    while !content.is_empty() {
        let lookahead = content.lookahead1();
        if lookahead.peek(kw::initial) {
            let kw: kw::initial = content.parse()?;
            content.parse::<Token![=]>()?;
            let lit: LitStr = content.parse()?;
            duplicate(initial.as_ref(), kw.span, "initial", cx);
            initial = Some(valid::duration(&lit, cx));
        } else if lookahead.peek(kw::max) {
            let kw: kw::max = content.parse()?;
            content.parse::<Token![=]>()?;
            let lit: LitStr = content.parse()?;
            duplicate(max.as_ref(), kw.span, "max", cx);
            max = Some(valid::duration(&lit, cx));
        } else {
            return Err(lookahead.error());
        }
        if content.is_empty() {
            break;
        }
        content.parse::<Token![,]>()?;
    }
    match (initial, max) {
        (Some(Some(initial)), Some(Some(max))) => {
            if max.millis < initial.millis {
                cx.error_spanned_by(&max.lit, "`max` must not be shorter than `initial`");
                return Ok(None);
            }
            Ok(Some((initial, max)))
        }
        (Some(_), Some(_)) => Ok(None),
        _ => {
            cx.error_at(
                span,
                "`backoff` needs both bounds: `backoff(initial = \"1s\", max = \"10m\")`",
            );
            Ok(None)
        }
    }
}
