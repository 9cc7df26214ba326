//! How deep JSON may nest inside the runtime, and a scanner that checks JSON text against it.
//!
//! QuickJS's `JSON.parse` and `JSON.stringify` recurse in C once per nested array or object. On
//! wasm32 that recursion uses the native stack (a few hundred bytes per level) but next to none
//! of the shadow stack that QuickJS's overflow check watches (see `c/quickjs-wasi.h`), so without
//! a bound a value a few thousand levels deep ends the run with an uncatchable "call stack
//! exhausted" trap. The runtime bounds every JSON conversion at [`MAX_JSON_DEPTH`] instead and
//! throws a catchable `RangeError` past it: `JSON.parse` and `JSON.stringify` in scripts (the
//! prelude wraps them), the script's result, `agent()` schemas, log lines, a nested workflow's
//! args and result, and the JSON the host hands in (args, agent output).

/// The most arrays and objects a JSON value may nest in the runtime.
///
/// 127 is the most the host's JSON parser (serde_json, with its default recursion limit) reads:
/// every JSON value the host hands the runtime fits, and every one the runtime hands back can be
/// read. It also keeps QuickJS's JSON recursion (about 300 bytes of native stack per level) well
/// inside the native stack the host gives a component, even at the bottom of a deep recursion.
pub const MAX_JSON_DEPTH: usize = 127;

/// Where `text` first opens an array or object nested more than `max` deep, as an index into the
/// JavaScript string (UTF-16 units); `None` when it never does.
///
/// Only brackets outside strings count; nothing else is checked (the parser does that).
pub fn nesting_past(text: &str, max: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(text[..i].encode_utf16().count());
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn counts_brackets_outside_strings() {
        assert_eq!(nesting_past(&nested(3), 3), None);
        assert_eq!(nesting_past(&nested(4), 3), Some(3));
        assert_eq!(nesting_past(r#"{"a": {"b": []}, "c": [[]]}"#, 3), None);
        assert_eq!(
            nesting_past(r#"["[[[[", "\"[[[[", {"k]]]]": "{{{{"}]"#, 2),
            None
        );
        assert_eq!(nesting_past(r#"["é😀", [[1]]]"#, 2), Some(9));
        assert_eq!(nesting_past("", 0), None);
        assert_eq!(nesting_past("\"unterminated [[[", 1), None);
    }

    #[test]
    fn the_limit_is_what_the_hosts_parser_reads() {
        let deepest = nested(MAX_JSON_DEPTH);
        assert_eq!(nesting_past(&deepest, MAX_JSON_DEPTH), None);
        assert!(serde_json::from_str::<serde_json::Value>(&deepest).is_ok());
        let deeper = nested(MAX_JSON_DEPTH + 1);
        assert!(nesting_past(&deeper, MAX_JSON_DEPTH).is_some());
        assert!(serde_json::from_str::<serde_json::Value>(&deeper).is_err());
    }
}
