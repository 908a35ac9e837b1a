//! Length-prefixed message framing for both directions of the PostgreSQL protocol, with a size
//! cap so a hostile or broken peer cannot make us allocate without bound.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest message either side accepts. An FTS exchange never comes close (the biggest message
/// is an ErrorResponse of a few hundred bytes); anything larger is a protocol violation.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// A frame that breaks the protocol's framing rules.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("message length {0} is outside 4..={MAX_MESSAGE_LEN}")]
    BadLength(i64),
    #[error("connection closed by peer")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one tagged message (`tag`, `int32 len`, body) and returns the tag and body.
/// `buf` keeps bytes read past the message for the next call.
pub async fn read_tagged<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<(u8, Bytes), FrameError> {
    fill(reader, buf, 5).await?;
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as i64;
    if !(4..=MAX_MESSAGE_LEN as i64).contains(&len) {
        return Err(FrameError::BadLength(len));
    }
    let total = 1 + len as usize;
    fill(reader, buf, total).await?;
    let mut frame = buf.split_to(total);
    frame.advance(5);
    Ok((tag, frame.freeze()))
}

/// Reads one untagged message (`int32 len` including itself, body), as the startup packet is.
pub async fn read_untagged<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<Bytes, FrameError> {
    fill(reader, buf, 4).await?;
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as i64;
    if !(4..=MAX_MESSAGE_LEN as i64).contains(&len) {
        return Err(FrameError::BadLength(len));
    }
    fill(reader, buf, len as usize).await?;
    let mut frame = buf.split_to(len as usize);
    frame.advance(4);
    Ok(frame.freeze())
}

async fn fill<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    want: usize,
) -> Result<(), FrameError> {
    while buf.len() < want {
        buf.reserve(want - buf.len());
        if reader.read_buf(buf).await? == 0 {
            return Err(FrameError::Closed);
        }
    }
    Ok(())
}

/// Appends a tagged message whose body `body` writes; the length is patched in afterwards.
pub fn put_tagged(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a NUL-terminated string.
pub fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

/// Splits a NUL-terminated string off the front of `body`.
pub fn take_cstr(body: &mut Bytes) -> Option<String> {
    let end = body.iter().position(|b| *b == 0)?;
    let s = String::from_utf8_lossy(&body[..end]).into_owned();
    body.advance(end + 1);
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_tagged_and_rejects_giant_lengths() {
        let mut out = BytesMut::new();
        put_tagged(&mut out, b'Q', |b| put_cstr(b, "PROBE dbid=2 contid=0"));
        let mut input: &[u8] = &out;
        let mut buf = BytesMut::new();
        let (tag, mut body) = read_tagged(&mut input, &mut buf).await.unwrap();
        assert_eq!(tag, b'Q');
        assert_eq!(take_cstr(&mut body).unwrap(), "PROBE dbid=2 contid=0");

        let giant = [b'D', 0x7f, 0xff, 0xff, 0xff];
        let mut input: &[u8] = &giant;
        let err = read_tagged(&mut input, &mut BytesMut::new())
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::BadLength(_)), "{err}");

        let mut input: &[u8] = &[b'D', 0, 0];
        let err = read_tagged(&mut input, &mut BytesMut::new())
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Closed));
    }
}
