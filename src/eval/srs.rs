//! Which envelope sender a forwarded message leaves with: SRS (`auth::srs`) for mail from an
//! outside sender going to an outside address, so the next hop's SPF check sees our domain
//! and a bounce comes back to us to be returned. Pure; the relay calls it per delivery.

use crate::compile::Table;
use crate::model::Address;

/// The SRS envelope sender for delivering a message from `mail_from` to `recipient` on
/// `day` (days since 1970): `Some` when the rule set configures SRS and neither the
/// sender's nor the recipient's domain is an accepted domain (the message is being
/// forwarded out, by a contact, a group, a redirect or a tenant's own forwarding). The null
/// sender stays null; our own senders stay as they are.
pub fn srs_sender(
    table: &Table,
    mail_from: Option<&Address>,
    recipient: &Address,
    day: u64,
) -> Option<Address> {
    let srs = table.srs.as_ref()?;
    let domain = &table.authentication.as_ref()?.srs.as_ref()?.domain.value;
    let from = mail_from?;
    if table.domains.kind(&from.domain).is_some() || table.domains.kind(&recipient.domain).is_some()
    {
        return None;
    }
    let rewritten = srs.forward(&format!("{}@{}", from.local, from.domain), domain, day)?;
    let (local, domain) = rewritten.rsplit_once('@')?;
    Some(Address {
        local: local.to_string(),
        domain: domain.to_ascii_lowercase(),
    })
}
