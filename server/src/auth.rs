//! Who may connect: trust for loopback clients when no password is
//! configured, SCRAM-SHA-256 for every client when one is.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::mechanism::AuthMechanismFactory;
use pgwire::api::auth::mechanism::{AuthMechanism, AuthState};
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth};
use pgwire::api::auth::sasl::SaslMechanisms;
use pgwire::api::auth::{
    protocol_negotiation, save_startup_parameters_to_metadata, AuthDriver, AuthOutcome, AuthSource,
    DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::ClientInfo;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::PasswordMessageFamily;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::admission::Admission;

/// PBKDF2 rounds of a SCRAM verifier, as Postgres' default.
const SCRAM_ITERATIONS: usize = 4096;

/// The startup handshake of every connection.
pub struct Startup {
    driver: AuthDriver<Arc<DefaultServerParameterProvider>>,
    mechanisms: Box<dyn AuthMechanismFactory + Send + Sync>,
    admission: Arc<Admission>,
}

impl Startup {
    /// Trust when `users` is empty, else SCRAM against their passwords. A
    /// client that logs in takes a session slot from `admission`.
    pub fn new(users: BTreeMap<String, String>, admission: Arc<Admission>) -> Startup {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = "15.0".to_string();
        parameters.date_style = "ISO, MDY".to_string();
        parameters.time_zone = "UTC".to_string();
        let driver = AuthDriver::new(Arc::new(parameters));
        let mechanisms: Box<dyn AuthMechanismFactory + Send + Sync> = if users.is_empty() {
            Box::new(TrustLoopback)
        } else {
            let mut scram = ScramAuth::new(Arc::new(Passwords::new(users)));
            scram.set_iterations(SCRAM_ITERATIONS);
            // No SCRAM-SHA-256-PLUS (channel binding): with the certificate
            // configured, pgwire 0.42 rejected psql's correct password over TLS.
            Box::new(SaslMechanisms::new(vec![Arc::new(scram)]))
        };
        Startup {
            driver,
            mechanisms,
            admission,
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let outcome = match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                self.driver
                    .begin_authentication(client, self.mechanisms.create())
                    .await?
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let user = client
                    .metadata()
                    .get(pgwire::api::METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                match self.driver.advance_authentication(client, message).await {
                    Ok(outcome) => outcome,
                    // pgwire names the user from the SCRAM message, which
                    // libpq leaves empty; Postgres names the login user.
                    Err(e) if e.code() == "28P01" => {
                        return Err(fatal(
                            "28P01",
                            format!("password authentication failed for user \"{user}\""),
                        ))
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => return Ok(()),
        };
        match outcome {
            AuthOutcome::InProgress => Ok(()),
            AuthOutcome::Authenticated { final_message, .. } => {
                let slot = self
                    .admission
                    .admit()
                    .ok_or_else(|| fatal("53300", "sorry, too many clients already".to_string()))?;
                // Kept with the connection's state, it is given back when
                // the connection ends, on whichever thread that is.
                client.session_extensions().insert(slot);
                self.driver
                    .complete_authentication(client, final_message)
                    .await
            }
        }
    }
}

/// Postgres' `trust` for loopback clients; anyone else is refused, since
/// without a password there is nothing to check.
struct TrustLoopback;

impl AuthMechanismFactory for TrustLoopback {
    fn create(&self) -> Box<dyn AuthMechanism> {
        Box::new(TrustLoopback)
    }
}

#[async_trait]
impl AuthMechanism for TrustLoopback {
    async fn begin(&mut self, client: &(dyn ClientInfo + Send + Sync)) -> PgWireResult<AuthState> {
        if client.socket_addr().ip().is_loopback() {
            Ok(AuthState::Ok {
                final_message: None,
                identity: None,
            })
        } else {
            Ok(AuthState::Failed(fatal(
                "28000",
                format!(
                    "no password is configured, so only loopback clients are trusted; {} is not one",
                    client.socket_addr().ip()
                ),
            )))
        }
    }

    async fn next(
        &mut self,
        _client: &(dyn ClientInfo + Send + Sync),
        _message: PasswordMessageFamily,
    ) -> PgWireResult<AuthState> {
        Ok(AuthState::Failed(fatal(
            "08P01",
            "unexpected password message".to_string(),
        )))
    }
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message,
    )))
}

/// The configured users' SCRAM verifiers, derived once at start-up as
/// PostgreSQL stores them: a login then costs HMACs, not PBKDF2 on a network
/// thread. An unknown user gets a mock verifier and the same exchange,
/// failing only at the proof, so that timing and messages do not tell which
/// users exist.
struct Passwords {
    verifiers: BTreeMap<String, Password>,
    /// Keys the mock salts: the same unknown name always gets the same salt,
    /// as a real user's stays the same, and nobody can predict it.
    mock_secret: [u8; 32],
}

impl Passwords {
    fn new(users: BTreeMap<String, String>) -> Passwords {
        let verifiers = users
            .into_iter()
            .map(|(user, password)| {
                let salt: [u8; 16] = rand::random();
                let salted = gen_salted_password(&password, &salt, SCRAM_ITERATIONS);
                (user, Password::new(Some(salt.to_vec()), salted))
            })
            .collect();
        Passwords {
            verifiers,
            mock_secret: rand::random(),
        }
    }

    fn mock(&self, user: &str) -> Password {
        // One PBKDF2 round is an HMAC-SHA-256 keyed by the user name.
        let secret: String = self
            .mock_secret
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let keyed = gen_salted_password(user, secret.as_bytes(), 1);
        let salt = keyed[..16].to_vec();
        let unguessable: [u8; 32] = rand::random();
        Password::new(Some(salt), unguessable.to_vec())
    }
}

impl Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("users", &self.verifiers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl AuthSource for Passwords {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        Ok(match self.verifiers.get(user) {
            Some(verifier) => verifier.clone(),
            None => self.mock(user),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_user_gets_a_stable_mock_salt_and_no_usable_verifier() {
        let passwords = Passwords::new(BTreeMap::from([("alice".into(), "secret".into())]));
        let first = passwords.mock("mallory");
        let again = passwords.mock("mallory");
        assert_eq!(first.salt(), again.salt());
        assert_ne!(first.password(), again.password());
        assert_ne!(first.salt(), passwords.mock("trudy").salt());
        assert_eq!(first.salt().map(<[u8]>::len), Some(16));
        let alice = passwords.verifiers.get("alice").unwrap();
        let expected = gen_salted_password("secret", alice.salt().unwrap(), SCRAM_ITERATIONS);
        assert_eq!(alice.password(), &expected[..]);
    }
}
