//! `mailflow explain`.

use super::Exit;
use mailflow::diagnostic::Code;
use mailflow::diagnostic::codes::markdown;

pub(super) fn run(code: Option<&str>, list: bool, md: bool) -> Exit {
    if md {
        print!("{}", markdown());
        return Exit::Clean;
    }
    if list {
        for c in Code::ALL {
            let i = c.info();
            println!("{}  {:<36} {}", i.id, i.name, i.summary);
        }
        return Exit::Clean;
    }
    let Some(text) = code else {
        return Exit::Error;
    };
    match Code::lookup(text) {
        Some(c) => {
            let i = c.info();
            println!("{} {}: {}\n\n{}", i.id, i.name, i.summary, i.explanation);
            Exit::Clean
        }
        None => {
            eprintln!(
                "error: `{text}` is not a mailflow diagnostic code; `mailflow explain --list` lists them"
            );
            Exit::Error
        }
    }
}
