//! Placeholder until the client branch merges.
use super::failure::AttemptError;
use super::{MessageType, ProbeReply};
use crate::model::{ContentId, Dbid};
use std::time::Duration;
pub struct Credentials {
    pub user: String,
    pub password: Option<String>,
}
pub struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
    pub dbid: Dbid,
    pub content: ContentId,
}
pub async fn send_message(
    _t: &Target<'_>,
    _k: MessageType,
    _c: &Credentials,
    _d: Duration,
) -> Result<ProbeReply, AttemptError> {
    unimplemented!()
}
