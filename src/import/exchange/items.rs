//! The objects after the last command, written as mailflow items (recipients named by
//! display name when it is unique, rules numbered in Exchange's priority order).

use super::*;

impl State<'_> {
    /// The items of every live object.
    pub(super) fn items(&self) -> Vec<Item> {
        let mut out = Vec::new();
        let live: Vec<(usize, &Object)> = self
            .objects
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.as_ref().map(|o| (i, o)))
            .collect();
        // Recipients are named by display name when no other recipient shares it.
        let names: HashMap<usize, String> = live
            .iter()
            .filter(|(_, o)| matches!(o.kind, Kind::Recipient(_)))
            .map(|(i, o)| {
                let name = match &o.display {
                    Some(d)
                        if live
                            .iter()
                            .filter(|(_, x)| {
                                matches!(x.kind, Kind::Recipient(_))
                                    && (x.display.as_deref() == Some(d.as_str()) || x.name == *d)
                            })
                            .count()
                            == 1 =>
                    {
                        d.clone()
                    }
                    _ => o.name.clone(),
                };
                (*i, name)
            })
            .collect();
        for (i, o) in &live {
            if o.kind == Kind::Rule {
                continue;
            }
            out.push(self.item(o, names.get(i).cloned(), &names, None));
        }
        for (p, i) in self.rule_order.iter().enumerate() {
            if let Some(Some(o)) = self.objects.get(*i) {
                out.push(self.item(o, None, &names, Some(p)));
            }
        }
        out
    }

    pub(super) fn item(
        &self,
        o: &Object,
        name: Option<String>,
        names: &HashMap<usize, String>,
        priority: Option<usize>,
    ) -> Item {
        let created = o.created;
        let mut body: Vec<(String, B)> = Vec::new();
        let (section, head) = match &o.data {
            Data::Domain {
                domain,
                kind,
                subdomains,
            } => {
                let d = if subdomains.is_some() && !domain.starts_with("*.") {
                    format!("*.{domain}")
                } else {
                    domain.clone()
                };
                let mut line = format!("accepted-domain {}", word(&d));
                let mut blame = created;
                if let Some((k, b)) = kind {
                    if k != "authoritative" {
                        line.push(' ');
                        line.push_str(k);
                    }
                    blame = *b;
                }
                return Item {
                    section: Section::AcceptedDomains,
                    head: (line, blame),
                    body: None,
                    origin: o.origin.clone(),
                };
            }
            Data::Rewrite {
                internal,
                external,
                outbound_only,
                exceptions,
                last,
            } => {
                let mut line = String::from("rewrite ");
                if !o.name.is_empty() {
                    line.push_str(&string(&o.name));
                    line.push(' ');
                }
                line.push_str(&format!("{} -> {}", word(internal), word(external)));
                if *outbound_only {
                    line.push_str(" outbound-only");
                }
                if !exceptions.is_empty() {
                    line.push_str(&format!(" except {}", words(exceptions)));
                }
                return Item {
                    section: Section::Rewrites,
                    head: (line, *last),
                    body: None,
                    origin: o.origin.clone(),
                };
            }
            Data::Receive(r) => {
                if let Some((v, b)) = &r.listen {
                    body.push((format!("listen {}", words(v)), *b));
                }
                if let Some((v, b)) = &r.remote {
                    body.push((format!("remote {}", words(v)), *b));
                }
                if let Some((v, b)) = &r.fqdn {
                    body.push((format!("fqdn {}", word(v)), *b));
                }
                let mech = r.mechanisms.as_ref();
                let tls_off = mech.is_some_and(|(m, _)| !m.iter().any(|x| x == "tls"));
                match (&r.require_tls, mech) {
                    (Some((true, b)), _) => body.push(("tls required".into(), *b)),
                    (_, Some((_, b))) if tls_off => body.push(("tls off".into(), *b)),
                    _ => {}
                }
                if !tls_off || r.require_tls.is_some_and(|(t, _)| t) {
                    self.certificate_lines(&mut body, created);
                }
                if let Some((m, b)) =
                    mech.filter(|(m, _)| m.iter().any(|x| x == "externalauthoritative"))
                {
                    let _ = m;
                    body.push(("auth externally-secured".into(), *b));
                } else if let Some((p, b)) = &r.permissions {
                    let auth = if p.iter().any(|x| x == "partners")
                        && !p.iter().any(|x| x == "anonymoususers")
                    {
                        "partner"
                    } else {
                        "anonymous"
                    };
                    body.push((format!("auth {auth}"), *b));
                } else if let Some((u, b)) = &r.usage {
                    body.push((format!("auth {u}"), *b));
                }
                if let Some((v, b)) = &r.oorg {
                    if !v.is_empty() {
                        body.push((format!("accept-oorg {}", words(v)), *b));
                    }
                }
                if let Some(b) = r.any_recipient {
                    body.push(("accept-any-recipient".into(), b));
                }
                for (k, v, b) in &r.limits {
                    body.push((format!("{k} {v}"), *b));
                }
                (
                    Section::ReceiveConnectors,
                    format!("receive-connector {} {{", string(&o.name)),
                )
            }
            Data::Send(s) => {
                match &s.spaces {
                    Some((v, b)) => body.push((format!("address-space {}", v.join(", ")), *b)),
                    None => body.push(("address-space *".into(), created)),
                }
                if let Some((v, b)) = &s.smart_hosts {
                    body.push((format!("smart-host {}", words(v)), *b));
                }
                if let Some((true, b)) = &s.ignore_starttls {
                    body.push(("tls off".into(), *b));
                } else if let Some((true, b)) = &s.require_tls {
                    body.push(("tls required".into(), *b));
                }
                if let Some((v, b)) = &s.tls_name {
                    body.push((format!("tls-name {}", word(v)), *b));
                }
                if let Some(b) = s.certificate {
                    self.certificate_lines(&mut body, b);
                }
                if let Some((v, b)) = &s.fqdn {
                    body.push((format!("fqdn {}", word(v)), *b));
                }
                (
                    Section::SendConnectors,
                    format!("send-connector {} {{", string(&o.name)),
                )
            }
            Data::Recipient {
                addresses,
                external,
                hidden,
                members,
                auth_only,
            } => {
                if let Some((_, b)) = addresses.first() {
                    let list: Vec<String> = addresses.iter().map(|(a, _)| a.clone()).collect();
                    body.push((format!("address {}", words(&list)), *b));
                }
                if let Some((e, b)) = external {
                    body.push((format!("external {}", word(e)), *b));
                }
                if !members.is_empty() {
                    let list: Vec<String> = members
                        .iter()
                        .map(|(m, _)| match m {
                            Member::Object(i) => string(names.get(i).map_or("", String::as_str)),
                            Member::Address(a) => word(a),
                        })
                        .collect();
                    let b = members.last().map_or(created, |(_, b)| *b);
                    body.push((format!("members {}", list.join(", ")), b));
                }
                if let Some(b) = auth_only {
                    body.push(("authenticated-senders-only".into(), *b));
                }
                if let Some(b) = hidden {
                    body.push(("hidden".into(), *b));
                }
                let kw = match o.kind {
                    Kind::Recipient(RecipientKind::MailUser) => "mail-user",
                    Kind::Recipient(RecipientKind::Group) => "group",
                    _ => "contact",
                };
                (
                    Section::Recipients,
                    format!(
                        "{kw} {} {{",
                        string(&name.unwrap_or_else(|| o.name.clone()))
                    ),
                )
            }
            Data::Rule { mode, statements } => {
                if let Some(p) = priority {
                    body.push((format!("priority {p}"), created));
                }
                if let Some((m, b)) = mode {
                    body.push((format!("mode {m}"), *b));
                }
                let (conds, actions): (Vec<_>, Vec<_>) = statements
                    .iter()
                    .partition(|(_, t, _)| t.starts_with("if ") || t.starts_with("except "));
                let (ifs, excepts): (Vec<_>, Vec<_>) = conds
                    .into_iter()
                    .partition(|(_, t, _)| t.starts_with("if "));
                for (_, t, b) in ifs.into_iter().chain(excepts).chain(actions) {
                    body.push((t.clone(), *b));
                }
                (Section::Rules, format!("rule {} {{", string(&o.name)))
            }
        };
        Item {
            section,
            head: (head, created),
            body: Some(body),
            origin: o.origin.clone(),
        }
    }

    pub(super) fn certificate_lines(&self, body: &mut Vec<(String, B)>, blame: B) {
        if let (Some(c), Some(k)) = (&self.options.certificate, &self.options.key) {
            body.push((format!("certificate {}", string(c)), blame));
            body.push((format!("key {}", string(k)), blame));
        }
    }
}
