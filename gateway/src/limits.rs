//! Caps on what a client can make the gateway keep: identifier and free-text fields that reach
//! logs and tables, and error messages that echo a client's input. One place, one number each,
//! documented in the README ("What is bounded"). A leaf: every layer may use it.

/// The longest identifier or text field a request may carry into logs and tables, in bytes:
/// `x-request-id`, `client_request_id`, the V2 `id` (HTTP and gRPC), `x-sluice-requester`, and
/// the ids and text of posted labels. Longer is a 400 / `INVALID_ARGUMENT`.
pub const MAX_ID_BYTES: usize = 256;

/// The longest error message sent back or written to a table, in bytes. Messages quote what a
/// client sent (a field name, a value); past this they are cut, with the full length said.
pub const MAX_ERROR_BYTES: usize = 1024;

/// A field longer than [`MAX_ID_BYTES`] (a bad request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} is {len} bytes long; the limit is {MAX_ID_BYTES} bytes")]
pub struct TooLong {
    pub field: String,
    pub len: usize,
}

/// Checks one identifier or text field against [`MAX_ID_BYTES`]; the error names the field.
pub fn check_id(field: &str, value: &str) -> Result<(), TooLong> {
    if value.len() > MAX_ID_BYTES {
        return Err(TooLong { field: field.to_string(), len: value.len() });
    }
    Ok(())
}

/// `message` cut to [`MAX_ERROR_BYTES`] on a character boundary.
pub fn bounded_message(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_ERROR_BYTES {
        return message.into();
    }
    let mut end = MAX_ERROR_BYTES - 64;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... (message cut: {} bytes in all)", &message[..end], message.len()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_over_the_cap_are_bad_requests() {
        assert!(check_id("x-request-id", &"a".repeat(MAX_ID_BYTES)).is_ok());
        let e = check_id("x-request-id", &"a".repeat(MAX_ID_BYTES + 1)).unwrap_err().to_string();
        assert!(e.contains("x-request-id") && e.contains("257 bytes"), "{e}");
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        assert_eq!(bounded_message("short"), "short");
        let long = "é".repeat(5000);
        let cut = bounded_message(&long);
        assert!(cut.len() <= MAX_ERROR_BYTES, "{}", cut.len());
        assert!(cut.ends_with("(message cut: 10000 bytes in all)"));
    }
}
