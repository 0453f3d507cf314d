//! Bedrock's exception names and the HTTP status each comes with: shared by the scripted replies
//! (`Reply::exception`) and the fake Bedrock that answers them.

/// HTTP status of a Bedrock exception (any spelling of its first letter). Unknown names are
/// client faults (400).
pub(crate) fn exception_status(name: &str) -> u16 {
    match upper_camel(name).as_str() {
        "ThrottlingException" | "ModelNotReadyException" => 429,
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "ExpiredTokenException"
        | "InvalidSignatureException"
        | "IncompleteSignatureException"
        | "MissingAuthenticationTokenException" => 403,
        "ResourceNotFoundException" | "UnknownOperationException" => 404,
        "ModelTimeoutException" => 408,
        "ConflictException" => 409,
        "ModelErrorException" | "ModelStreamErrorException" => 424,
        "InternalServerException" => 500,
        "ServiceUnavailableException" => 503,
        _ => 400,
    }
}

/// `name` with an upper-case first letter (`throttlingException` → `ThrottlingException`).
pub(crate) fn upper_camel(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}
