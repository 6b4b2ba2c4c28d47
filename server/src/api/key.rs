//! The `X-Api-Key` header as an OpenAPI security scheme, read without refusing anything itself.

use poem::{Request, RequestBody};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    registry::{MetaSecurityScheme, Registry},
};

/// The scheme's name in `components.securitySchemes`.
const SCHEME: &str = "ApiKey";
/// The header that carries the key.
pub const HEADER: &str = "X-Api-Key";

/// The key a request presents, if any. In the spec it is the `ApiKey` security scheme, so
/// Swagger UI asks for the key once and generators configure it once per client. Checking it
/// is [`crate::node::Node`]'s: a missing or wrong key is a 403 with the JSON error body, not
/// poem-openapi's bare 401. With `OPTIONAL` (operations a registered sender id authorizes
/// instead) the spec lists "no key" as an alternative.
pub struct KeyHeader<const OPTIONAL: bool>(pub Option<String>);

/// Operations that need the key.
pub type ApiKey = KeyHeader<false>;
/// Operations the key or a registered sender id authorizes.
pub type ApiKeyOrSender = KeyHeader<true>;

impl<const OPTIONAL: bool> KeyHeader<OPTIONAL> {
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'a, const OPTIONAL: bool> ApiExtractor<'a> for KeyHeader<OPTIONAL> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            SCHEME,
            MetaSecurityScheme {
                ty: "apiKey",
                description: Some("One of the server's API keys (`--api-key`)."),
                name: Some(HEADER),
                key_in: Some("header"),
                scheme: None,
                bearer_format: None,
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![SCHEME]
    }

    fn has_security_fallback() -> bool {
        OPTIONAL
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _options: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let key = req.header(HEADER).map(str::to_owned);
        Ok(KeyHeader(key))
    }
}
