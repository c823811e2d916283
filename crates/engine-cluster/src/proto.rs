//! The node service's types and gRPC client and server, generated from
//! `proto/guild/v1/node.proto` at build time; private to this crate.

#![allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]

tonic::include_proto!("guild.v1");
