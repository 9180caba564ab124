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
            let mut scram = ScramAuth::new(Arc::new(Passwords { users }));
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

/// The configured users' passwords.
#[derive(Debug)]
struct Passwords {
    users: BTreeMap<String, String>,
}

#[async_trait]
impl AuthSource for Passwords {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        let password = self.users.get(user).ok_or_else(|| {
            fatal(
                "28P01",
                format!("password authentication failed for user \"{user}\""),
            )
        })?;
        let salt: [u8; 16] = rand::random();
        let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
        Ok(Password::new(Some(salt.to_vec()), salted))
    }
}
