//! Cross-crate tests live in `tests/tests/`; this library only makes the package build.
