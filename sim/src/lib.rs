//! `hubsim`, a stand-in HighByte Intelligence Hub runtime with the real HA
//! behaviour on PostgreSQL, and the sandbox pieces the demo and the tests
//! build on: a throwaway PostgreSQL ([`pg`]), hubsim runtime archives
//! ([`runtime`]), hubsim images for the docker driver ([`image`]), binary lookup ([`bins`]), hubsim process control
//! ([`process`]) and outage / split-brain measurement ([`measure`]); a whole
//! HA group ([`sandbox`]), a fleet of groups each on its own database
//! ([`fleet`]), the TOML files they write for the agents and the
//! controller ([`configs`]), and their Prometheus side ([`exporters`]).

pub mod bins;
pub mod configs;
pub mod demo;
mod demo_args;
mod demo_report;
pub mod exporters;
pub mod fleet;
mod fleet_demo;
pub mod hubsim;
pub mod image;
pub mod lifetime;
pub mod measure;
pub mod memory_dir;
pub mod pg;
pub mod process;
pub mod runtime;
pub mod sandbox;
pub mod timing;
