//! The types `prost` generates from `proto/guild/v1/message.proto`: the reference that
//! guild's own codec (`engine_core::wire`) is held to, field by field and byte by byte.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/guild.v1.rs"));
