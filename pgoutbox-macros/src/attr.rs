//! Parsing the attributes' arguments: `#[operation("name", option, option =
//! value, …)]` and `#[payload(crate = path)]`.
//!
//! Only the syntax is checked here (and that no option is given twice);
//! the values stay as the user's literals, for `valid` to check with their
//! spans.

use proc_macro2::Span;
use syn::ext::IdentExt as _;
use syn::parse::{ParseStream, Parser as _};
use syn::{Ident, LitInt, LitStr, Path, Token};

use crate::ctxt::Ctxt;

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
    syn::custom_keyword!(output);
}

/// An option's value and the span of its keyword, which errors about the
/// option as a whole point at.
#[derive(Clone)]
pub(crate) struct Opt<T> {
    pub(crate) span: Span,
    pub(crate) value: T,
}

/// `backoff(initial = "…", max = "…")`; a missing bound is `None`.
#[derive(Clone)]
pub(crate) struct BackoffArg {
    pub(crate) initial: Option<LitStr>,
    pub(crate) max: Option<LitStr>,
}

/// `priority = -5`: the sign is a separate token.
#[derive(Clone)]
pub(crate) struct PriorityArg {
    pub(crate) negative: bool,
    pub(crate) lit: LitInt,
}

/// The arguments of `#[operation]`, as written.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) name: Option<LitStr>,
    pub(crate) contract: Option<Opt<Path>>,
    pub(crate) transactional: Option<Opt<()>>,
    pub(crate) idempotent: Option<Opt<()>>,
    pub(crate) max_attempts: Option<Opt<LitInt>>,
    pub(crate) backoff: Option<Opt<BackoffArg>>,
    pub(crate) timeout: Option<Opt<LitStr>>,
    pub(crate) queue: Option<Opt<LitStr>>,
    pub(crate) priority: Option<Opt<PriorityArg>>,
    pub(crate) payload: Option<Opt<Ident>>,
    pub(crate) krate: Option<Opt<Path>>,
    /// A contract's output type (a handler's is its `Result<T>`'s `T`).
    pub(crate) output: Option<Opt<syn::Type>>,
}

fn span_of<T>(option: Option<&Opt<T>>) -> Option<Span> {
    option.map(|o| o.span)
}

impl Args {
    /// The options that belong to the published row (and so to a contract).
    pub(crate) fn publish_side(&self) -> Vec<(&'static str, Span)> {
        [
            ("idempotent", span_of(self.idempotent.as_ref())),
            ("max_attempts", span_of(self.max_attempts.as_ref())),
            ("queue", span_of(self.queue.as_ref())),
            ("priority", span_of(self.priority.as_ref())),
        ]
        .into_iter()
        .filter_map(|(option, span)| Some((option, span?)))
        .collect()
    }

    /// The options that only a handler can honour.
    pub(crate) fn handler_side(&self) -> Vec<(&'static str, Span)> {
        [
            ("transactional", span_of(self.transactional.as_ref())),
            ("backoff", span_of(self.backoff.as_ref())),
            ("timeout", span_of(self.timeout.as_ref())),
            ("payload", span_of(self.payload.as_ref())),
        ]
        .into_iter()
        .filter_map(|(option, span)| Some((option, span?)))
        .collect()
    }
}

/// Parses the arguments of `#[operation]`; a syntax error aborts, a
/// duplicate option is collected.
pub(crate) fn parse(tokens: proc_macro2::TokenStream, cx: &Ctxt) -> syn::Result<Args> {
    let parser = |input: ParseStream| parse_args(input, cx);
    parser.parse2(tokens)
}

/// Parses the arguments of `#[payload]`: nothing, or `crate = path`.
pub(crate) fn parse_payload(
    tokens: proc_macro2::TokenStream,
    cx: &Ctxt,
) -> syn::Result<Option<Opt<Path>>> {
    let parser = |input: ParseStream| {
        let mut krate = None;
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(Token![crate]) {
                let kw: Token![crate] = input.parse()?;
                set(&mut krate, kw.span, value_after_eq(input)?, "crate", cx);
            } else {
                return Err(lookahead.error());
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(krate)
    };
    parser.parse2(tokens)
}

/// Stores an option, or reports it as a duplicate (keeping the first).
fn set<T>(slot: &mut Option<Opt<T>>, span: Span, value: T, option: &str, cx: &Ctxt) {
    if slot.is_some() {
        cx.error_at(span, format!("duplicate option `{option}`"));
    } else {
        *slot = Some(Opt { span, value });
    }
}

fn value_after_eq<T: syn::parse::Parse>(input: ParseStream) -> syn::Result<T> {
    input.parse::<Token![=]>()?;
    input.parse()
}

fn parse_args(input: ParseStream, cx: &Ctxt) -> syn::Result<Args> {
    let mut args = Args::default();
    let mut first = true;
    while !input.is_empty() {
        let lookahead = input.lookahead1();
        if first && lookahead.peek(LitStr) {
            args.name = Some(input.parse()?);
        } else if lookahead.peek(kw::transactional) {
            let kw: kw::transactional = input.parse()?;
            set(&mut args.transactional, kw.span, (), "transactional", cx);
        } else if lookahead.peek(kw::idempotent) {
            let kw: kw::idempotent = input.parse()?;
            set(&mut args.idempotent, kw.span, (), "idempotent", cx);
        } else if lookahead.peek(kw::max_attempts) {
            let kw: kw::max_attempts = input.parse()?;
            let lit = value_after_eq(input)?;
            set(&mut args.max_attempts, kw.span, lit, "max_attempts", cx);
        } else if lookahead.peek(kw::backoff) {
            let kw: kw::backoff = input.parse()?;
            let content;
            syn::parenthesized!(content in input);
            let backoff = parse_backoff(&content, cx)?;
            set(&mut args.backoff, kw.span, backoff, "backoff", cx);
        } else if lookahead.peek(kw::timeout) {
            let kw: kw::timeout = input.parse()?;
            let lit = value_after_eq(input)?;
            set(&mut args.timeout, kw.span, lit, "timeout", cx);
        } else if lookahead.peek(kw::queue) {
            let kw: kw::queue = input.parse()?;
            let lit = value_after_eq(input)?;
            set(&mut args.queue, kw.span, lit, "queue", cx);
        } else if lookahead.peek(kw::priority) {
            let kw: kw::priority = input.parse()?;
            input.parse::<Token![=]>()?;
            let negative = input.parse::<Option<Token![-]>>()?.is_some();
            let lit = input.parse()?;
            set(
                &mut args.priority,
                kw.span,
                PriorityArg { negative, lit },
                "priority",
                cx,
            );
        } else if lookahead.peek(kw::payload) {
            let kw: kw::payload = input.parse()?;
            let ident = value_after_eq(input)?;
            set(&mut args.payload, kw.span, ident, "payload", cx);
        } else if lookahead.peek(kw::contract) {
            let kw: kw::contract = input.parse()?;
            let path = value_after_eq(input)?;
            set(&mut args.contract, kw.span, path, "contract", cx);
        } else if lookahead.peek(Token![crate]) {
            let kw: Token![crate] = input.parse()?;
            let path = value_after_eq(input)?;
            set(&mut args.krate, kw.span, path, "crate", cx);
        } else if lookahead.peek(kw::output) {
            let kw: kw::output = input.parse()?;
            let ty = value_after_eq(input)?;
            set(&mut args.output, kw.span, ty, "output", cx);
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

fn parse_backoff(content: ParseStream, cx: &Ctxt) -> syn::Result<BackoffArg> {
    let mut initial = None;
    let mut max = None;
    while !content.is_empty() {
        let lookahead = content.lookahead1();
        if lookahead.peek(kw::initial) {
            let kw: kw::initial = content.parse()?;
            let lit = value_after_eq(content)?;
            set(&mut initial, kw.span, lit, "initial", cx);
        } else if lookahead.peek(kw::max) {
            let kw: kw::max = content.parse()?;
            let lit = value_after_eq(content)?;
            set(&mut max, kw.span, lit, "max", cx);
        } else {
            return Err(lookahead.error());
        }
        if content.is_empty() {
            break;
        }
        content.parse::<Token![,]>()?;
    }
    Ok(BackoffArg {
        initial: initial.map(|o| o.value),
        max: max.map(|o| o.value),
    })
}
