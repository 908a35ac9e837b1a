//! Backend messages the simulator writes, laid out as a Greenplum segment lays them out, plus the
//! deliberately broken shapes of the `garbage` fault.

use bytes::{BufMut, BytesMut};

use crate::state::GarbageVariant;
use fts_wire::frame::{put_cstr, put_tagged};
use fts_wire::{MessageType, ProbeReply, RESPONSE_COLUMNS};

/// `BOOLOID`: the type every reply column claims.
pub const BOOL_OID: i32 = 16;
/// `TEXTOID`, used by the wrong-type garbage variant.
pub const TEXT_OID: i32 = 25;

pub const AUTH_OK: i32 = 0;
pub const AUTH_CLEARTEXT: i32 = 3;
pub const AUTH_MD5: i32 = 5;

pub fn auth_request(out: &mut BytesMut, code: i32, extra: &[u8]) {
    put_tagged(out, b'R', |b| {
        b.put_i32(code);
        b.put_slice(extra);
    });
}

pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    put_tagged(out, b'S', |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, key: i32) {
    put_tagged(out, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(key);
    });
}

pub fn ready_for_query(out: &mut BytesMut) {
    put_tagged(out, b'Z', |b| b.put_u8(b'I'));
}

/// NegotiateProtocolVersion: we speak 3.0 and none of the `_pq_.` options asked for.
pub fn negotiate_protocol_version(out: &mut BytesMut, unrecognized: &[String]) {
    put_tagged(out, b'v', |b| {
        b.put_i32(196608);
        b.put_i32(unrecognized.len() as i32);
        for name in unrecognized {
            put_cstr(b, name);
        }
    });
}

/// ErrorResponse with the fields libpq shows: severity (localized and not), code, message, detail.
pub fn error_response(
    out: &mut BytesMut,
    severity: &str,
    sqlstate: &str,
    message: &str,
    detail: Option<&str>,
) {
    put_tagged(out, b'E', |b| {
        for (field, value) in [
            (b'S', Some(severity)),
            (b'V', Some(severity)),
            (b'C', Some(sqlstate)),
            (b'M', Some(message)),
            (b'D', detail),
        ] {
            if let Some(v) = value {
                b.put_u8(field);
                put_cstr(b, v);
            }
        }
        b.put_u8(0);
    });
}

fn row_description(out: &mut BytesMut, columns: &[&str], type_oid: i32) {
    put_tagged(out, b'T', |b| {
        b.put_i16(columns.len() as i16);
        for (i, name) in columns.iter().enumerate() {
            put_cstr(b, name);
            b.put_i32(0); // table oid
            b.put_i16(i as i16); // attnum: the Anum_fts_message_response_* index
            b.put_i32(type_oid);
            b.put_i16(1); // typlen
            b.put_i32(-1); // typmod
            b.put_i16(0); // format: text
        }
    });
}

fn data_row(out: &mut BytesMut, values: &[u8]) {
    put_tagged(out, b'D', |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            b.put_i32(1);
            b.put_u8(*v);
        }
    });
}

fn command_complete(out: &mut BytesMut, tag: &str) {
    put_tagged(out, b'C', |b| put_cstr(b, tag));
}

/// The reply `SendFtsResponse` builds: 5 bool columns, one row of raw 0/1 bytes, the message type
/// as command tag, ReadyForQuery.
pub fn fts_reply(out: &mut BytesMut, kind: MessageType, reply: ProbeReply) {
    row_description(out, &RESPONSE_COLUMNS, BOOL_OID);
    data_row(out, &reply.to_bytes());
    command_complete(out, kind.as_str());
    ready_for_query(out);
}

/// A malformed reply. Returns true when the connection should then be closed rather than left
/// open (random bytes have no framing to continue after).
pub fn garbage_reply(
    out: &mut BytesMut,
    kind: MessageType,
    reply: ProbeReply,
    variant: GarbageVariant,
    random: &mut impl FnMut() -> u64,
) -> bool {
    let values = reply.to_bytes();
    match variant {
        GarbageVariant::WrongColumns => {
            row_description(out, &RESPONSE_COLUMNS[..4], BOOL_OID);
            data_row(out, &values[..4]);
        }
        GarbageVariant::WrongType => {
            row_description(out, &RESPONSE_COLUMNS, TEXT_OID);
            data_row(out, &values);
        }
        GarbageVariant::TextBool => {
            row_description(out, &RESPONSE_COLUMNS, BOOL_OID);
            let text = values.map(|v| if v != 0 { b't' } else { b'f' });
            data_row(out, &text);
        }
        GarbageVariant::TwoRows => {
            row_description(out, &RESPONSE_COLUMNS, BOOL_OID);
            data_row(out, &values);
            data_row(out, &values);
        }
        GarbageVariant::GiantLength => {
            out.put_u8(b'T');
            out.put_i32(0x7fff_ffff);
            out.put_i16(RESPONSE_COLUMNS.len() as i16);
            return false;
        }
        GarbageVariant::RandomBytes => {
            for _ in 0..8 {
                out.put_u64(random());
            }
            return true;
        }
    }
    command_complete(out, kind.as_str());
    ready_for_query(out);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_layout_is_byte_exact() {
        let mut out = BytesMut::new();
        let reply = ProbeReply {
            is_mirror_up: true,
            is_in_sync: true,
            is_syncrep_enabled: true,
            ..Default::default()
        };
        fts_reply(&mut out, MessageType::Probe, reply);
        // RowDescription: 'T', len, 5 columns; first column name then 18 bytes of attributes.
        assert_eq!(out[0], b'T');
        assert_eq!(&out[5..7], &[0, 5]);
        assert_eq!(&out[7..20], b"is_mirror_up\0");
        assert_eq!(
            &out[20..38],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 1, 255, 255, 255, 255, 0, 0]
        );
        let d = out.iter().position(|b| *b == b'D').unwrap();
        assert_eq!(
            &out[d..d + 32],
            &[
                b'D', 0, 0, 0, 31, 0, 5, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1,
                0, 0, 0, 0, 1, 0
            ]
        );
        assert!(out.ends_with(b"C\0\0\0\x0aPROBE\0Z\0\0\0\x05I"));
    }
}
