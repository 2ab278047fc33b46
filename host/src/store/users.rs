//! Users: the people who own credentials and data sources.

use redb::{ReadableDatabase, ReadableTable};

use super::model::{User, decode, encode};
use super::{Result, Store, StoreError, USERS, check_name, now_ms};

impl Store {
    /// Adds a user. Names are unique ignoring case: `Alice` is refused when
    /// `alice` exists, since the two are easily confused (a database made
    /// before this rule may hold both; they keep working).
    pub fn add_user(&self, name: &str) -> Result<User> {
        check_name("user name", name)?;
        let txn = self.db().begin_write()?;
        let user = {
            let mut users = txn.open_table(USERS)?;
            for r in users.iter()? {
                let (existing, _) = r?;
                if existing.value().eq_ignore_ascii_case(name) {
                    return Err(StoreError::UserExists(existing.value().to_owned()));
                }
            }
            let user = User {
                name: name.to_owned(),
                created_ms: now_ms(),
            };
            users.insert(name, encode(&user)?.as_slice())?;
            user
        };
        txn.commit()?;
        Ok(user)
    }

    /// The user named `name`, if any.
    pub fn user(&self, name: &str) -> Result<Option<User>> {
        let txn = self.db().begin_read()?;
        let users = txn.open_table(USERS)?;
        users
            .get(name)?
            .map(|v| decode(v.value(), "user"))
            .transpose()
    }

    /// The user named `name`, or an error saying how to add one.
    pub fn require_user(&self, name: &str) -> Result<User> {
        self.user(name)?
            .ok_or_else(|| StoreError::UnknownUser(name.to_owned()))
    }

    /// All users, by name.
    pub fn users(&self) -> Result<Vec<User>> {
        let txn = self.db().begin_read()?;
        let users = txn.open_table(USERS)?;
        users
            .iter()?
            .map(|r| {
                let (_, v) = r?;
                decode(v.value(), "user")
            })
            .collect()
    }
}

pub(super) fn exists(txn: &redb::WriteTransaction, name: &str) -> Result<bool> {
    Ok(txn.open_table(USERS)?.get(name)?.is_some())
}
