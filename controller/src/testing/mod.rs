//! Test doubles for the controller's unit tests.

pub mod fake_agent;
