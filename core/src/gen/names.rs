//! Safe file names for domain values: a domain cell becomes the prefix of
//! `<prefix>_unsupervised.csv`, so it must not escape the output folder or upset a file
//! system.

use super::groups::FxHashSet;

/// Longest prefix kept, in bytes (file names are usually limited to 255 bytes).
const MAX_STEM_BYTES: usize = 120;

/// The file-name prefix for one domain value, before collision handling.
///
/// Rules: `/`, `\`, control characters and the characters Windows forbids (`<>:"|?*`)
/// become `_` (the original replaced only `/` by `_`, so common names are unchanged);
/// `..` becomes `__`; leading and trailing spaces and dots are dropped (so `..` and `.` cannot appear as a
/// name); an empty result becomes `_empty`; a Windows device name (`CON`, `NUL`, `COM1`,
/// ... with or without an extension, any case) gets a leading `_`; long values are cut to
/// 120 bytes at a character boundary.
pub fn safe_stem(value: &str) -> String {
    let mut s: String = value
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*') {
                '_'
            } else {
                c
            }
        })
        .collect();
    while s.contains("..") {
        s = s.replace("..", "__");
    }
    let trimmed = s.trim_matches(|c: char| c == ' ' || c == '.');
    if trimmed.len() != s.len() {
        s = trimmed.to_string();
    }
    if s.len() > MAX_STEM_BYTES {
        let mut cut = MAX_STEM_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s = s.trim_end_matches([' ', '.']).to_string();
    }
    if s.is_empty() {
        return "_empty".to_string();
    }
    let base = s.split('.').next().unwrap_or("").to_ascii_uppercase();
    let reserved = matches!(base.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((base.starts_with("COM") || base.starts_with("LPT"))
            && base.len() == 4
            && base.as_bytes()[3].is_ascii_digit()
            && base.as_bytes()[3] != b'0');
    if reserved {
        s.insert(0, '_');
    }
    s
}

/// Safe, unique prefixes for `values` (in order): [`safe_stem`] of each, and when two
/// prefixes collide (compared case-insensitively, for case-insensitive file systems) the
/// later one gets `~2`, `~3`, ... in order of appearance, so the result is deterministic.
pub fn unique_stems<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut used: FxHashSet<String> = FxHashSet::default();
    let mut out = Vec::new();
    for v in values {
        let base = safe_stem(v);
        let mut name = base.clone();
        let mut k = 2;
        while used.contains(&name.to_lowercase()) {
            name = format!("{base}~{k}");
            k += 1;
        }
        used.insert(name.to_lowercase());
        out.push(name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_dots_and_controls() {
        assert_eq!(safe_stem("은행/예금"), "은행_예금");
        assert_eq!(safe_stem("a\\b"), "a_b");
        assert_eq!(safe_stem(".."), "__");
        assert_eq!(safe_stem("."), "_empty");
        assert_eq!(safe_stem("../etc/passwd"), "___etc_passwd");
        assert_eq!(safe_stem("v1.2"), "v1.2");
        assert_eq!(safe_stem("a\nb\tc\u{7f}"), "a_b_c_");
        assert_eq!(safe_stem("what?<x>:|*\""), "what__x_____");
        assert_eq!(safe_stem(""), "_empty");
        assert_eq!(safe_stem(" . "), "_empty");
        assert_eq!(safe_stem("보험"), "보험");
    }

    #[test]
    fn reserved_names() {
        assert_eq!(safe_stem("con"), "_con");
        assert_eq!(safe_stem("NUL.txt"), "_NUL.txt");
        assert_eq!(safe_stem("com1"), "_com1");
        assert_eq!(safe_stem("com0"), "com0");
        assert_eq!(safe_stem("console"), "console");
    }

    #[test]
    fn long_values_cut_at_char_boundary() {
        let s = safe_stem(&"가".repeat(100));
        assert!(
            s.len() <= MAX_STEM_BYTES && s.chars().all(|c| c == '가'),
            "{s}"
        );
    }

    #[test]
    fn collisions_are_deterministic() {
        let v = unique_stems(["a/b", "a_b", "A_B", "a\\b", "c"]);
        assert_eq!(v, vec!["a_b", "a_b~2", "A_B~3", "a_b~4", "c"]);
    }
}
