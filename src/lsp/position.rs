//! Byte offsets (what spans hold) to LSP positions and back. LSP counts lines from 0 and
//! columns in UTF-16 code units: `é` is one unit, `😀` two, while both are several bytes.

use lsp_types::Position;

/// The line starts of one text, for converting in both directions.
#[derive(Debug, Clone)]
pub struct LineIndex {
    line_starts: Vec<usize>,
}

impl LineIndex {
    /// Indexes `text`'s lines.
    pub fn new(text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { line_starts }
    }

    /// The position of a byte offset (clamped to the text, rounded down to a character).
    pub fn position(&self, text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        let character: usize = text
            .get(start..offset)
            .map_or(0, |s| s.chars().map(char::len_utf16).sum());
        Position::new(to_u32(line), to_u32(character))
    }

    /// The byte offset of a position. A column past the end of its line means the end of the
    /// line, a line past the end the end of the text; a column inside a surrogate pair means
    /// the character's start.
    pub fn offset(&self, text: &str, pos: Position) -> usize {
        let Some(&start) = self.line_starts.get(pos.line as usize) else {
            return text.len();
        };
        let end = self
            .line_starts
            .get(pos.line as usize + 1)
            .map_or(text.len(), |next| next.saturating_sub(1));
        let line = text.get(start..end).unwrap_or("");
        let line = line.strip_suffix('\r').unwrap_or(line);
        let mut units = 0usize;
        for (i, c) in line.char_indices() {
            let next = units + c.len_utf16();
            if next > pos.character as usize {
                return start + i;
            }
            units = next;
        }
        start + line.len()
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(text: &str, offset: usize, line: u32, character: u32) {
        let idx = LineIndex::new(text);
        assert_eq!(
            idx.position(text, offset),
            Position::new(line, character),
            "offset {offset}"
        );
        assert_eq!(
            idx.offset(text, Position::new(line, character)),
            offset,
            "{line}:{character}"
        );
    }

    #[test]
    fn ascii() {
        let text = "ab\ncd\n";
        roundtrip(text, 0, 0, 0);
        roundtrip(text, 2, 0, 2);
        roundtrip(text, 3, 1, 0);
        roundtrip(text, 5, 1, 2);
        roundtrip(text, 6, 2, 0);
    }

    #[test]
    fn non_ascii_counts_utf16_units() {
        // `é` is 2 bytes and 1 unit; `😀` is 4 bytes and 2 units; `€` 3 bytes, 1 unit.
        let text = "x\ncontact \"Zoé😀€\" { }\n";
        let line = 2; // line 1 starts at byte 2
        let q = text.find('"').unwrap();
        roundtrip(text, q, 1, 8);
        let e_acute = text.find('é').unwrap();
        roundtrip(text, e_acute, 1, 11);
        roundtrip(text, e_acute + 2, 1, 12); // the emoji
        roundtrip(text, e_acute + 2 + 4, 1, 14); // `€`
        roundtrip(text, e_acute + 2 + 4 + 3, 1, 15); // closing quote
        assert_eq!(q, line + 8);
    }

    #[test]
    fn out_of_range_and_mid_character_positions_clamp() {
        let text = "a😀b\r\nc";
        let idx = LineIndex::new(text);
        // Inside the surrogate pair: the emoji's start.
        assert_eq!(idx.offset(text, Position::new(0, 2)), 1);
        // Past the end of the line: before the CR LF.
        assert_eq!(idx.offset(text, Position::new(0, 99)), 6);
        // Past the last line: the end.
        assert_eq!(idx.offset(text, Position::new(9, 0)), text.len());
        // A byte offset inside a character rounds down.
        assert_eq!(idx.position(text, 2), Position::new(0, 1));
        assert_eq!(idx.position(text, 999), Position::new(1, 1));
    }
}
