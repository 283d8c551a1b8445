//! `sluice auth hash` and `sluice auth new-token`: the `hash` of an `[[auth.tokens]]` entry, so
//! the secret itself never goes in a config file.

use std::io::BufRead;
use std::process::ExitCode;

use super::args::AuthCommand;
use crate::auth;

pub fn run(command: AuthCommand) -> ExitCode {
    match command {
        AuthCommand::Hash => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
                eprintln!("error: cannot read the secret from stdin: {e}");
                return ExitCode::from(2);
            }
            let secret = line.trim_end_matches(['\r', '\n']);
            if secret.len() < 16 {
                eprintln!("error: the secret on stdin is shorter than 16 characters; use `sluice auth new-token`");
                return ExitCode::from(2);
            }
            println!("{}", auth::hash(secret));
            ExitCode::SUCCESS
        }
        AuthCommand::NewToken { name, scopes } => {
            let token = auth::new_token();
            eprintln!("token (give it to the caller; it is not stored anywhere): {token}");
            let scopes: Vec<String> = scopes.iter().map(|s| format!("\"{s}\"")).collect();
            println!(
                "[[auth.tokens]]\nname = \"{name}\"\nhash = \"{}\"\nscopes = [{}]",
                auth::hash(&token),
                scopes.join(", ")
            );
            ExitCode::SUCCESS
        }
    }
}
