//! Name search: the key a display name is found by, so that a prefix matches whatever the
//! case and accents (`"élo"` finds "Éloïse", "ELODIE" and "elodie").

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Longest search prefix, characters.
pub const MAX_PREFIX_CHARS: usize = 100;

/// The search key of `name`: compatibility-decomposed (NFKD), combining marks (accents)
/// dropped, lowercased, whitespace runs made one space, trimmed.
pub fn name_key(name: &str) -> String {
    let folded: String = name
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a membership (by its display name) or a conversation (by its name) is found and
/// ordered by: [`name_key`] of the name, U+0001 (below every character a key holds, so
/// `"ana"` sorts before `"ana b"`), and the document's `_id` in hex — one field, unique, so a
/// search walks one index range and a cursor continues it with one bound.
pub fn sort_key(name: &str, id: impl std::fmt::Display) -> String {
    format!("{}\u{1}{}", name_key(name), id)
}

/// The key a search prefix is looked up by, if it is one: 1–[`MAX_PREFIX_CHARS`] characters
/// with something besides spaces; otherwise the field error to answer for `name_prefix`.
pub fn prefix_key(prefix: &str) -> Result<String, crate::domain::FieldError> {
    let key = name_key(prefix);
    if key.is_empty() || prefix.chars().count() > MAX_PREFIX_CHARS {
        return Err(crate::domain::FieldError::new(
            "name_prefix",
            format!("1-{MAX_PREFIX_CHARS} characters, not only spaces"),
        ));
    }
    Ok(key)
}

/// The first key after every key that starts with `prefix` (a key already): the exclusive
/// upper bound of a prefix range.
pub fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.to_owned();
    end.push(char::MAX);
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_accents_and_spacing_do_not_matter() {
        for name in ["Éloïse", "ELOÏSE", "eloise", "  Eloïse "] {
            assert_eq!(name_key(name), "eloise", "{name}");
        }
        assert_eq!(name_key("Zoë  Saldaña"), "zoe saldana");
        assert_eq!(name_key("ＡＢＣ"), "abc", "full-width letters fold (NFKD)");
        assert_eq!(
            name_key("Åsa Øberg"),
            "asa øberg",
            "a letter that is not accented stays"
        );
        assert_eq!(name_key("王小明"), "王小明");
    }

    #[test]
    fn sort_keys_order_by_name_then_id_and_stay_in_their_prefix_range() {
        let (a, b) = (
            crate::domain::ids::DocId::from_bytes([1; 12]),
            crate::domain::ids::DocId::from_bytes([2; 12]),
        );
        let mut keys = [
            sort_key("Ana B", a),
            sort_key("ana", b),
            sort_key("Ana", a),
            sort_key("Anabel", a),
        ];
        keys.sort();
        let names: Vec<&str> = keys
            .iter()
            .map(|k| k.split('\u{1}').next().unwrap())
            .collect();
        assert_eq!(names, ["ana", "ana", "ana b", "anabel"]);
        assert!(keys[0].ends_with(&a.to_hex()) == (a < b));
        let end = prefix_end("ana ");
        assert!(keys[2].as_str() >= "ana " && keys[2] < end);
        assert!(!(keys[0].as_str() >= "ana " && keys[0] < end));
    }

    #[test]
    fn a_prefix_range_holds_every_key_that_starts_with_it_and_nothing_else() {
        let p = name_key("Él");
        let end = prefix_end(&p);
        for k in ["el", "eloise", "el zorro", "el\u{FFFF}x"] {
            assert!(k >= p.as_str() && k < end.as_str(), "{k}");
        }
        for k in ["e", "ek", "em", "f"] {
            assert!(!(k >= p.as_str() && k < end.as_str()), "{k}");
        }
    }
}
