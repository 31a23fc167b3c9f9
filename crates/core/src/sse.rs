//! Server-sent events: the one line splitter every SSE reader in Rampart uses (the response tap,
//! the streaming commit point, the cache's answer assembler).

use std::ops::ControlFlow;

use bytes::BytesMut;

/// Feeds `data` to a line reader: calls `f` on each complete line (without its `\n`; a trailing
/// `\r` is left for the caller), in order, and keeps an incomplete last line in `partial` for the
/// next call. Stops at the first `Break`, leaving the rest of `data` unread.
pub fn split_lines<B>(
    partial: &mut BytesMut,
    data: &[u8],
    mut f: impl FnMut(&[u8]) -> ControlFlow<B>,
) -> ControlFlow<B> {
    let mut rest = data;
    while let Some(nl) = memchr::memchr(b'\n', rest) {
        let (seg, tail) = rest.split_at(nl);
        rest = &tail[1..];
        if partial.is_empty() {
            f(seg)?;
        } else {
            partial.extend_from_slice(seg);
            let flow = f(partial);
            partial.clear();
            flow?;
        }
    }
    partial.extend_from_slice(rest);
    ControlFlow::Continue(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_across_frames_and_early_stop() {
        let mut partial = BytesMut::new();
        let mut seen: Vec<String> = Vec::new();
        for chunk in ["data: a\n\nda", "ta: b", "\r\n", "tail"] {
            let _ = split_lines(&mut partial, chunk.as_bytes(), |l| {
                seen.push(String::from_utf8_lossy(l).into_owned());
                ControlFlow::<()>::Continue(())
            });
        }
        assert_eq!(seen, ["data: a", "", "data: b\r"]);
        assert_eq!(&partial[..], b"tail");

        let mut partial = BytesMut::new();
        let flow = split_lines(&mut partial, b"x\ny\nz", |l| {
            if l == b"y" {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert!(flow.is_break());
        assert!(partial.is_empty(), "the rest after a break is not kept");
    }
}
