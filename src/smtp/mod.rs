//! The SMTP protocol, without I/O: command lines to [`Command`]s ([`command`]), the DATA and
//! BDAT receivers and outbound dot-stuffing ([`data`]) with the buffer they keep a message in,
//! replies both ways ([`reply`]), [`Status`], the one code-enhanced-text triple every
//! part of the relay that decides or reports a reply carries, and [`Notify`], a recipient's
//! DSN request from `RCPT TO` to the spool, the report decision and the next hop.
//! The relay's session drives these with the bytes it reads; nothing here blocks or panics.

mod buffer;
pub mod command;
pub mod data;
mod notify;
pub mod reply;
mod status;

pub use command::{
    Body, Command, LineEnd, MAX_COMMAND_LINE, MAX_DOMAIN, MAX_LOCAL_PART, MAX_MAIL_RCPT_LINE,
    MAX_PATH, MailParams, RcptParams, Ret, find_line, is_ascii, parse_command, parse_domain,
    xtext_decode, xtext_encode,
};
pub use data::{
    BdatReceiver, Buffered, DataError, DataProgress, DataReceiver, MAX_TEXT_LINE, dot_stuff,
    to_crlf,
};
pub use notify::{BadNotify, DsnKind, Notify};
pub use reply::{MAX_REPLY_LINE, Reply, ReplyError, parse_reply, parse_reply_line, split_enhanced};
pub use status::Status;
