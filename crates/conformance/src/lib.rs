//! # conformance
//!
//! The promises of guild's contracts, written once as scenarios and stamped out as named
//! `#[test]`s for every engine and messaging backend by [`messaging_suite!`] and
//! [`engine_suite!`]. Each backend crate has one `tests/conformance.rs` that invokes them;
//! `cargo xtask conformance` runs them all and prints the matrix.
//!
//! ```text
//! // crates/messaging-memory/tests/conformance.rs
//! conformance::messaging_suite!(|| std::sync::Arc::new(messaging_memory::MemoryMessaging::process_wide(Default::default())));
//! ```

/// Builds a list of `(name, scenario)` from the names a `__with_…_scenarios!` macro
/// gives, for `engine::scenarios` and `supervision::scenarios`.
macro_rules! scenario_list {
    (; $($scenario:ident),* $(,)?) => {
        vec![$((stringify!($scenario), $scenario as Scenario)),*]
    };
}

pub mod agents;
pub mod chaos;
pub mod engine;
pub mod harness;
pub mod messaging;
pub mod otlp_receiver;
pub mod proto;
pub mod redis_server;
pub mod supervision;
pub mod tcp;

/// Stamps out one `#[test]` per delivery-contract scenario for the backend made by `$make`
/// (an expression of type `Fn() -> Arc<impl MessagingBackend>`).
#[macro_export]
macro_rules! messaging_suite {
    ($make:expr) => {
        $crate::messaging_suite!(@each $make;
            one_delivery_at_a_time_across_topics,
            queued_deliveries_come_out_in_id_order,
            an_urgent_message_overtakes_what_is_still_queued,
            new_client_from_latest_gets_only_new_messages,
            new_client_from_earliest_replays_the_backlog,
            resubscribing_resumes_after_the_last_position,
            an_unfinished_delivery_is_handed_out_again,
            working_ahead_completes_in_order_and_resumes,
            a_failure_is_dead_lettered_and_the_position_advances,
            a_dead_letter_never_dead_letters,
            namespaces_are_isolated,
            a_sender_never_receives_its_own_message,
            a_message_to_several_topics_is_delivered_once_per_topic,
            history_of_a_topic_is_in_publish_order,
            history_after_an_id_is_by_time,
            history_by_ids_keeps_the_requested_order,
            a_message_published_after_a_newer_one_is_delivered_and_found,
            a_burst_is_found_by_id_and_resumed_exactly,
            nothing_one_client_does_wipes_another,
            the_consumer_is_notified_when_work_arrives,
            a_client_id_has_one_live_subscription,
        );
    };
    (@each $make:expr; $($scenario:ident),* $(,)?) => {
        $(
            #[test]
            fn $scenario() {
                let make = $make;
                let make = move || -> ::std::sync::Arc<dyn ::engine_core::MessagingBackend> { make() };
                $crate::messaging::$scenario(&make);
            }
        )*
    };
}

/// Calls `callback!(args; scenario, scenario, ...)`, invoked as
/// `__with_engine_scenarios!([callback] args)`, with the name of every engine
/// scenario: the one list both [`engine_suite!`] and [`engine::scenarios`] are made from.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_engine_scenarios {
    ([$($callback:tt)+] $($args:tt)*) => {
        $($callback)+! { $($args)*;
            request_response_observed_from_another_engine,
            a_stopped_agent_handles_nothing_and_disappears,
            a_paused_agent_handles_nothing_until_resumed,
            timers_send_later_and_stop_when_cancelled,
            shutdown_stops_every_agent,
            running_a_running_agent_again_is_a_no_op,
            agents_may_share_a_name,
            a_panic_crashes_only_its_agent,
            a_handler_error_is_dead_lettered_and_the_agent_goes_on,
            a_handler_past_its_timeout_is_cancelled_and_the_agent_goes_on,
            an_agent_is_subscribed_when_run_returns,
            launch_failures_name_the_problem,
            lifecycle_events_and_running_agree,
            an_agent_can_start_from_the_backlog,
            engine_instances_are_independent,
        }
    };
}

/// Stamps out one `#[test]` per engine scenario for the engine made by `engine` over the
/// backend made by `messaging` (expressions of type `Fn() -> Arc<impl ExecutionEngine>`
/// and `Fn() -> Arc<impl MessagingBackend>`).
///
/// Test binaries without the standard harness (the process engine's, whose `main` must
/// first offer to host an agent) run [`engine::scenarios`] instead.
#[macro_export]
macro_rules! engine_suite {
    (engine: $engine:expr, messaging: $messaging:expr $(,)?) => {
        $crate::__with_engine_scenarios!([$crate::__stamp_tests] engine; $engine, $messaging);
    };
}

/// One `#[test]` per scenario of module `$module`, each on a fresh engine and backend
/// from `$engine` and `$messaging`: what [`engine_suite!`] and [`supervision_suite!`]
/// expand to.
#[doc(hidden)]
#[macro_export]
macro_rules! __stamp_tests {
    ($module:ident; $engine:expr, $messaging:expr; $($scenario:ident),* $(,)?) => {
        $(
            #[test]
            fn $scenario() {
                let (engine, messaging) = ($engine, $messaging);
                let engine = move || -> ::std::sync::Arc<dyn ::engine_core::ExecutionEngine> { engine() };
                let messaging = move || -> ::std::sync::Arc<dyn ::engine_core::MessagingBackend> { messaging() };
                $crate::$module::$scenario(&engine, &messaging);
            }
        )*
    };
}

/// Calls `callback!(args; scenario, ...)` with the name of every supervision scenario:
/// the one list both [`supervision_suite!`] and [`supervision::scenarios`] are made
/// from.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_supervision_scenarios {
    ([$($callback:tt)+] $($args:tt)*) => {
        $($callback)+! { $($args)*;
            each_restart_policy_decides_on_a_crash,
            one_for_one_restarts_only_the_agent_that_crashed,
            one_for_all_stops_the_rest_in_reverse_and_restarts_all_in_order,
            rest_for_one_restarts_the_agent_and_those_after_it,
            past_its_intensity_a_group_is_stopped_and_the_failure_escalates,
            backoff_delays_grow_in_order,
            a_restarted_agent_gets_what_was_queued_and_the_poison_message_once,
            a_breaker_opens_then_half_opens_and_closes,
            an_agent_failing_its_first_probe_is_not_ready,
            an_agent_failing_its_health_probes_is_restarted,
            a_stuck_handler_is_killed_where_the_engine_can_and_reported_elsewhere,
        }
    };
}

/// Stamps out one `#[test]` per supervision scenario for the engine made by `engine`
/// over the backend made by `messaging`, as [`engine_suite!`] does for the engine
/// contract. Invoke it inside a `mod supervision`, so `cargo xtask conformance` finds
/// the cell's tests by name.
#[macro_export]
macro_rules! supervision_suite {
    (engine: $engine:expr, messaging: $messaging:expr $(,)?) => {
        $crate::__with_supervision_scenarios!([$crate::__stamp_tests] supervision; $engine, $messaging);
    };
}

/// Stamps out the fault test of [`chaos`] for the engine made by `engine` with panics
/// as the fault: `panics_in_a_supervised_chain_lose_nothing_over_memory` and `…_redis`
/// (a private server), each printing what it found.
#[macro_export]
macro_rules! panic_chaos_suite {
    (engine: $engine:expr $(,)?) => {
        #[test]
        fn panics_in_a_supervised_chain_lose_nothing_over_memory() {
            $crate::panic_chaos_suite!(@run "memory", $engine, || {
                ::std::sync::Arc::new(::messaging_memory::MemoryMessaging::process_wide(
                    ::std::default::Default::default(),
                ))
            });
        }

        #[test]
        fn panics_in_a_supervised_chain_lose_nothing_over_redis() {
            let server = $crate::redis_server::RedisServer::start();
            // Retention above the stream's length: a relay that lags is never trimmed past.
            let url = format!("{}?maxlen={}", server.url(), $crate::chaos::MESSAGES);
            $crate::panic_chaos_suite!(@run "redis", $engine, || {
                ::std::sync::Arc::new(
                    ::messaging_redis::RedisMessaging::connect(&url)
                        .expect("the test server answers"),
                )
            });
        }
    };
    (@run $backend:literal, $engine:expr, $messaging:expr) => {
        let report = $crate::chaos::chain_under_faults(
            ::std::sync::Arc::new($engine),
            &$messaging,
            $crate::chaos::MESSAGES,
            |_, guild, relay| $crate::chaos::panic_next(guild, relay),
        );
        eprintln!("over {}: {report:?}", $backend);
        assert!(report.dead_lettered > 0 && report.restarts > 0, "{report:?}");
    };
}

/// The whole matrix row of one engine, for its `tests/conformance.rs`: the engine
/// contract and the supervisor's promises, over the in-memory bus (`memory::`,
/// `supervision::memory::`) and over a private Redis per test (`redis::`,
/// `supervision::redis::`). `engine` is the path of a function that makes a fresh
/// engine, such as `crate::engine`. The test crate depends on `messaging-memory` and
/// `messaging-redis`.
#[macro_export]
macro_rules! engine_row {
    (engine: $engine:path $(,)?) => {
        $crate::engine_row!(@backends engine_suite, $engine);

        /// The supervisor's promises on this engine, over each backend.
        mod supervision {
            $crate::engine_row!(@backends supervision_suite, $engine);
        }
    };
    (@backends $suite:ident, $engine:path) => {
        mod memory {
            $crate::$suite!(
                engine: $engine,
                messaging: || {
                    ::std::sync::Arc::new(::messaging_memory::MemoryMessaging::process_wide(
                        ::std::default::Default::default(),
                    ))
                },
            );
        }

        mod redis {
            $crate::$suite!(
                engine: $engine,
                messaging: {
                    let server = $crate::redis_server::RedisServer::start();
                    move || {
                        ::std::sync::Arc::new(
                            ::messaging_redis::RedisMessaging::connect(&server.url())
                                .expect("the test server answers"),
                        )
                    }
                },
            );
        }
    };
}
