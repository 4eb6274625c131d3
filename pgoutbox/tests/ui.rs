//! The `#[operation]` macro's UI tests: every mistake in `ui/fail` must fail
//! with the reviewed message in its `.stderr`; every case in `ui/pass` must
//! compile and run. Regenerate the messages with `TRYBUILD=overwrite`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
