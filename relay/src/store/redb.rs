//! placeholder for the redb backend
