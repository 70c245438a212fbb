//! Rewrites the generated blocks of the READMEs: the text between `<!-- NAME:begin -->` and
//! `<!-- NAME:end -->` is replaced, everything else is left as written by hand.

use std::path::Path;

/// Replaces the block `name` in `text`; `None` if the markers are missing.
pub fn replace_block(text: &str, name: &str, body: &str) -> Option<String> {
    let begin = format!("<!-- {name}:begin -->\n");
    let end = format!("<!-- {name}:end -->");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    Some(format!("{}{body}{}", &text[..start], &text[stop..]))
}

/// Rewrites block `name` of the file at `path`. Returns whether the file had the markers.
pub fn rewrite(path: &Path, name: &str, body: &str) -> std::io::Result<bool> {
    let text = std::fs::read_to_string(path)?;
    match replace_block(&text, name, body) {
        Some(new) => {
            if new != text {
                std::fs::write(path, new)?;
            }
            Ok(true)
        }
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_between_the_markers() {
        let t = "a\n<!-- x:begin -->\nold\n<!-- x:end -->\nb\n";
        assert_eq!(
            replace_block(t, "x", "new\n").unwrap(),
            "a\n<!-- x:begin -->\nnew\n<!-- x:end -->\nb\n"
        );
        assert!(replace_block(t, "y", "new\n").is_none());
        assert!(replace_block("<!-- x:begin -->\nno end", "x", "").is_none());
    }
}
