//! How a recipient's [`Notify`] is kept in a spool record: as the text older spools hold
//! (`Option<String>`, `"NEVER"` or e.g. `"FAILURE,DELAY"`), so segments written before the
//! value was typed read back, and segments written now read in older builds.
//!
//! A stored text that does not parse (only damage that the checksums missed, or a hand-edited
//! spool, can make one) reads as no `NOTIFY`: the sender then hears of failures and delays,
//! which is better than losing a bounce, and the next hop is sent no `NOTIFY` either. Refusing
//! the record instead would drop the whole message as damage.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::smtp::Notify;

pub(super) fn serialize<S: Serializer>(notify: &Option<Notify>, s: S) -> Result<S::Ok, S::Error> {
    notify.map(Notify::as_str).serialize(s)
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Notify>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    Ok(text.and_then(|t| t.parse().ok()))
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use crate::smtp::Notify;

    /// The field as it was before it was typed.
    #[derive(Serialize, Deserialize)]
    struct Old {
        notify: Option<String>,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct New {
        #[serde(with = "super")]
        notify: Option<Notify>,
    }

    /// What the session stored before (its `notify_text`) for each form, and absence.
    const FORMS: [Option<&str>; 9] = [
        None,
        Some("NEVER"),
        Some("SUCCESS"),
        Some("FAILURE"),
        Some("DELAY"),
        Some("SUCCESS,FAILURE"),
        Some("SUCCESS,DELAY"),
        Some("FAILURE,DELAY"),
        Some("SUCCESS,FAILURE,DELAY"),
    ];

    #[test]
    fn encodes_byte_for_byte_as_the_old_string_and_decodes_it() {
        for form in FORMS {
            let old = postcard::to_stdvec(&Old {
                notify: form.map(String::from),
            })
            .unwrap();
            let new = New {
                notify: form.map(|t| t.parse().unwrap()),
            };
            assert_eq!(postcard::to_stdvec(&new).unwrap(), old, "{form:?}");
            assert_eq!(postcard::from_bytes::<New>(&old).unwrap(), new, "{form:?}");
        }
    }

    /// Any case or order the old code might have met decodes; what it means is kept.
    #[test]
    fn decodes_any_case_and_order() {
        let old = postcard::to_stdvec(&Old {
            notify: Some("delay,Failure".into()),
        })
        .unwrap();
        let new = postcard::from_bytes::<New>(&old).unwrap();
        assert_eq!(
            new.notify.map(|n| n.to_string()).as_deref(),
            Some("FAILURE,DELAY")
        );
    }

    #[test]
    fn damaged_text_reads_as_absent() {
        for damaged in ["", "FAILUR\u{fffd}", "NEVER,DELAY", "SUCCESS,SUCCESS"] {
            let old = postcard::to_stdvec(&Old {
                notify: Some(damaged.into()),
            })
            .unwrap();
            let new = postcard::from_bytes::<New>(&old).unwrap();
            assert_eq!(new.notify, None, "{damaged:?}");
        }
    }

    /// Bytes that are not even a string fail like any other damaged head.
    #[test]
    fn bytes_that_are_no_string_are_an_error() {
        assert!(postcard::from_bytes::<New>(&[1, 3, 0xff, 0xfe, 0xfd]).is_err());
    }
}
