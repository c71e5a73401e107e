//! `sentinel top --once`: the Processes screen as plain text, for scripts and
//! tickets. It is drawn by the same code as the live view, into ratatui's
//! in-memory backend, so the two never disagree.
use ratatui::{
    Terminal,
    backend::TestBackend,
    buffer::{Buffer, CellWidth},
};

use super::{app::App, frame::Frame, ui};

/// One screen of the Processes view (RSS descending, kernel threads hidden)
/// at `width`x`height`: lines without trailing spaces or escape codes.
pub fn once_text(frame: &Frame, width: u16, height: u16) -> String {
    let mut app = App::new();
    app.on_frame(frame.clone());
    // The in-memory backend cannot fail (its error type is uninhabited).
    let Ok(mut term) = Terminal::new(TestBackend::new(width.max(1), height.max(1)));
    let Ok(_) = term.draw(|f| ui::draw(f, &app));
    let mut out = buffer_lines(term.backend().buffer()).join("\n");
    out.push('\n');
    out
}

/// The buffer's rows as text, trailing spaces trimmed. A wide character
/// occupies the cells after it; those are skipped, not printed as spaces.
pub(crate) fn buffer_lines(buf: &Buffer) -> Vec<String> {
    let width = buf.area.width as usize;
    buf.content
        .chunks(width.max(1))
        .map(|row| {
            let mut line = String::with_capacity(width);
            let mut skip = 0u16;
            for c in row {
                if skip == 0 {
                    line.push_str(c.symbol());
                }
                skip = skip.max(c.cell_width()).saturating_sub(1);
            }
            line.truncate(line.trim_end().len());
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::app::tests::{frame, proc};

    #[test]
    fn once_text_is_plain_and_sorted_by_rss() {
        let mut k = proc(2, 0, "kthreadd", 0);
        k.kernel = true;
        let mut f = frame(vec![
            proc(1, 0, "init", 8 << 20),
            k,
            proc(300, 1, "big", 2 << 30),
            proc(301, 1, "日本語", 1 << 20),
        ]);
        f.mode.describe = "standalone: this process runs the probes".into();
        let text = once_text(&f, 100, 20);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20);
        assert!(lines[0].contains("standalone"), "{text}");
        assert!(!text.contains('\x1b'));
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
        let header = lines
            .iter()
            .position(|l| l.contains("PID"))
            .expect("header");
        assert!(lines[header + 1].contains("big"), "{text}");
        assert!(lines[header + 2].contains("init"), "{text}");
        assert!(!text.contains("kthreadd"), "kernel threads hidden: {text}");
        // Wide characters do not shift the columns after them.
        let wide = lines.iter().find(|l| l.contains("日本語")).expect("row");
        let big = lines[header + 1];
        assert_eq!(
            wide.find("1.0M").map(|b| wide[..b]
                .chars()
                .map(|c| if c.is_ascii() { 1 } else { 2 })
                .sum::<usize>()),
            big.find("2.0G"),
            "{text}"
        );
    }

    #[test]
    fn once_text_tiny_sizes() {
        let f = frame(vec![proc(1, 0, "init", 1)]);
        assert!(!once_text(&f, 1, 1).is_empty());
        assert!(once_text(&f, 0, 0).ends_with('\n'));
    }
}
