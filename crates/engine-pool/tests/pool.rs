//! What the pool engine promises beyond the engine contract: handlers await tokio IO
//! on the workers, a handler that never yields holds only its own worker, dedicated
//! agents get a thread of their own, long handlers are logged, and each scheduling
//! policy has its effect, shown in counts and order rather than timing.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use conformance::harness::{publish, subscribe, text, unique_namespace, wait_until};
use conformance::tcp::ShoutServer;
use engine_core::{
    Agent, AgentContext, AgentRegistry, AgentResult, AgentSpec, ExecutionEngine, GuildContext,
    Message, MessagingBackend, Outcome, Payload, Placement, Priority, RateLimit, StartFrom,
    Subscription,
};
use engine_pool::{Policy, PoolConfig, PoolEngine};
use messaging_memory::MemoryMessaging;

/// An agent made of a closure run for each message.
struct Hook<F>(F);

impl<F> Agent for Hook<F>
where
    F: FnMut(&AgentContext, &Message) -> AgentResult + Send + 'static,
{
    async fn handle(&mut self, ctx: &AgentContext, message: &Message) -> AgentResult {
        (self.0)(ctx, message)
    }
}

/// Registers agent type `name` as a closure per message (cloned for each agent).
fn hook<F>(registry: &mut AgentRegistry, name: &str, handle: F)
where
    F: FnMut(&AgentContext, &Message) -> AgentResult + Clone + Send + Sync + 'static,
{
    registry.register(name, move |_| Ok(Hook(handle.clone())));
}

struct Setup {
    messaging: Arc<dyn MessagingBackend>,
    namespace: String,
    guild: GuildContext,
    engine: PoolEngine,
}

fn setup(scenario: &str, registry: AgentRegistry, config: PoolConfig) -> Setup {
    let messaging: Arc<dyn MessagingBackend> = Arc::new(MemoryMessaging::new());
    let namespace = unique_namespace(scenario);
    let guild = GuildContext::new(namespace.as_str(), messaging.clone(), Arc::new(registry));
    let engine = PoolEngine::with_config(config).expect("the pool starts");
    Setup {
        messaging,
        namespace,
        guild,
        engine,
    }
}

impl Setup {
    fn run(&self, spec: AgentSpec) {
        self.engine.run_agent(&self.guild, spec).unwrap();
    }

    fn send(&self, topic: &str, text: &str) {
        publish(&*self.messaging, &self.namespace, "test", topic, text);
    }

    fn watch(&self, topic: &str) -> Box<dyn Subscription> {
        subscribe(
            &*self.messaging,
            &self.namespace,
            "watcher",
            &[topic],
            StartFrom::Earliest,
        )
    }
}

/// The next message on a watched topic, waiting for it.
fn next_text(watch: &mut Box<dyn Subscription>) -> String {
    let mut got = None;
    wait_until(&[], "a message arrives", || {
        got = watch.next().unwrap();
        got.is_some()
    });
    watch.complete(Outcome::Handled).unwrap();
    text(&got.expect("waited for").message)
}

fn spin(for_: Duration) {
    let start = Instant::now();
    while start.elapsed() < for_ {
        std::hint::spin_loop();
    }
}

#[test]
fn handlers_await_tokio_io_on_the_workers() {
    let server = ShoutServer::start(3);
    let mut registry = AgentRegistry::new();
    server.register_caller(&mut registry);
    // One worker: three callers interleave their awaits on it.
    let pool = setup(
        "pool-io",
        registry,
        PoolConfig {
            workers: Some(1),
            ..PoolConfig::default()
        },
    );
    let mut answers = pool.watch("answers");
    for i in 0..3 {
        pool.run(AgentSpec::new(format!("caller-{i}"), "caller").with_topic(format!("q{i}")));
    }
    for i in 0..3 {
        pool.send(&format!("q{i}"), &format!("hello {i}"));
    }
    let mut got: Vec<String> = (0..3).map(|_| next_text(&mut answers)).collect();
    got.sort();
    assert_eq!(got, ["HELLO 0", "HELLO 1", "HELLO 2"]);
    server.join();
    pool.engine.shutdown().unwrap();
}

#[test]
fn a_handler_that_never_yields_holds_only_its_own_worker() {
    let release = Arc::new(AtomicBool::new(false));
    let spinning = Arc::new(AtomicBool::new(false));
    let mut registry = AgentRegistry::new();
    let (hold, started) = (release.clone(), spinning.clone());
    hook(&mut registry, "spin", move |_, _| {
        started.store(true, Ordering::SeqCst);
        while !hold.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
        Ok(())
    });
    hook(&mut registry, "echo", |ctx, message| {
        ctx.send("answers", message.payload.clone())?;
        Ok(())
    });
    let pool = setup(
        "pool-spin",
        registry,
        PoolConfig {
            workers: Some(2),
            ..PoolConfig::default()
        },
    );
    let mut answers = pool.watch("answers");
    pool.run(AgentSpec::new("spinner", "spin").with_topic("spin"));
    pool.run(AgentSpec::new("echo", "echo").with_topic("echo"));
    pool.send("spin", "go");
    wait_until(&[], "the spinner holds a worker", || {
        spinning.load(Ordering::SeqCst)
    });
    for i in 0..20 {
        pool.send("echo", &i.to_string());
        assert_eq!(next_text(&mut answers), i.to_string());
    }
    release.store(true, Ordering::SeqCst);
    pool.engine.shutdown().unwrap();
}

#[test]
fn a_dedicated_agent_runs_on_a_thread_of_its_own() {
    let mut registry = AgentRegistry::new();
    hook(&mut registry, "where", |ctx, _| {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        ctx.send("answers", Payload::encode_json(&name)?)?;
        Ok(())
    });
    let pool = setup("pool-dedicated", registry, PoolConfig::default());
    let mut answers = pool.watch("answers");
    let mut alone = AgentSpec::new("alone", "where").with_topic("a");
    alone.placement = Placement::Dedicated;
    pool.run(alone);
    pool.run(AgentSpec::new("shared", "where").with_topic("s"));
    pool.send("a", "?");
    assert_eq!(next_text(&mut answers), "agent:alone");
    pool.send("s", "?");
    assert_eq!(next_text(&mut answers), "guild-pool");
    pool.engine.stop_agent(&pool.namespace, "alone").unwrap();
    pool.engine.shutdown().unwrap();
}

/// Log lines captured from every thread, for the test that looks for one.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Writer(sink.clone()))
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        log
    })
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_handler_that_holds_a_worker_too_long_is_logged() {
    let log = captured();
    let mut registry = AgentRegistry::new();
    hook(&mut registry, "slow", |ctx, _| {
        spin(Duration::from_millis(30));
        ctx.send("answers", Payload::encode_json("done")?)?;
        Ok(())
    });
    let pool = setup(
        "pool-long",
        registry,
        PoolConfig {
            long_handler_ms: 10,
            ..PoolConfig::default()
        },
    );
    let mut answers = pool.watch("answers");
    pool.run(AgentSpec::new("sluggard", "slow").with_topic("slow"));
    pool.send("slow", "go");
    assert_eq!(next_text(&mut answers), "done");
    pool.engine.shutdown().unwrap();
    let log = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let line = log
        .lines()
        .find(|line| line.contains("held a pool worker"))
        .unwrap_or_else(|| panic!("no warning in {log}"));
    assert!(line.contains("agent=sluggard"), "{line}");
}

/// Agents of type `log` append their id to one shared log, after `work` of spinning.
fn logging_registry(log: &Arc<Mutex<Vec<String>>>, work: Duration) -> AgentRegistry {
    let mut registry = AgentRegistry::new();
    let log = log.clone();
    hook(&mut registry, "log", move |ctx, _| {
        spin(work);
        log.lock().unwrap().push(ctx.id().to_owned());
        Ok(())
    });
    registry
}

#[test]
fn priority_runs_an_urgent_agent_within_one_budget_of_low_priority_work() {
    const BUDGET: u32 = 4;
    let log = Arc::new(Mutex::new(Vec::new()));
    let pool = setup(
        "pool-priority",
        logging_registry(&log, Duration::from_micros(200)),
        PoolConfig {
            workers: Some(1),
            policy: Policy::Priority,
            budget: BUDGET,
            ..PoolConfig::default()
        },
    );
    for i in 0..10 {
        let mut low = AgentSpec::new(format!("low-{i}"), "log").with_topic("chores");
        low.priority = Priority::Low;
        pool.run(low);
    }
    let mut urgent = AgentSpec::new("urgent", "log").with_topic("alarm");
    urgent.priority = Priority::High;
    pool.run(urgent);
    for _ in 0..100 {
        pool.send("chores", "sweep");
    }
    wait_until(&[], "low-priority work is under way", || {
        log.lock().unwrap().len() >= 50
    });
    let before = log.lock().unwrap().len();
    pool.send("alarm", "fire");
    wait_until(&[], "the urgent agent handled its message", || {
        log.lock().unwrap().iter().any(|id| id == "urgent")
    });
    let log = log.lock().unwrap();
    let at = log.iter().position(|id| id == "urgent").unwrap();
    let waited = at - before;
    // The turn under way when the alarm came, and no other.
    assert!(
        waited <= 2 * BUDGET as usize,
        "the urgent message waited behind {waited} low-priority messages"
    );
    drop(log);
    pool.engine.shutdown().unwrap();
}

#[test]
fn priority_ages_waiting_agents_so_low_priority_work_does_not_starve() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let pool = setup(
        "pool-aging",
        logging_registry(&log, Duration::from_micros(200)),
        PoolConfig {
            workers: Some(1),
            policy: Policy::Priority,
            budget: 1,
            aging_ms: 1,
            ..PoolConfig::default()
        },
    );
    for i in 0..2 {
        let mut high = AgentSpec::new(format!("high-{i}"), "log").with_topic("hot");
        high.priority = Priority::Urgent;
        pool.run(high);
    }
    let mut low = AgentSpec::new("low", "log").with_topic("cold");
    low.priority = Priority::Lowest;
    pool.run(low);
    for _ in 0..250 {
        pool.send("hot", "x");
    }
    pool.send("cold", "y");
    wait_until(&[], "all work is done", || log.lock().unwrap().len() == 501);
    let log = log.lock().unwrap();
    let at = log.iter().position(|id| id == "low").unwrap();
    assert!(
        at < 400,
        "the low-priority message ran only after {at} urgent ones"
    );
    drop(log);
    pool.engine.shutdown().unwrap();
}

#[test]
fn fair_share_divides_handler_time_by_weight() {
    let counts: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let snapshot = Arc::new(Mutex::new(None));
    let total = Arc::new(AtomicU64::new(0));
    let mut registry = AgentRegistry::new();
    let (c, s, t) = (counts.clone(), snapshot.clone(), total.clone());
    hook(&mut registry, "work", move |ctx, _| {
        spin(Duration::from_micros(300));
        let me = usize::from(ctx.id() == "heavy");
        c[me].fetch_add(1, Ordering::SeqCst);
        if t.fetch_add(1, Ordering::SeqCst) + 1 == 200 {
            *s.lock().unwrap() = Some([c[0].load(Ordering::SeqCst), c[1].load(Ordering::SeqCst)]);
        }
        Ok(())
    });
    let pool = setup(
        "pool-fair",
        registry,
        PoolConfig {
            workers: Some(1),
            policy: Policy::FairShare,
            budget: 1,
            ..PoolConfig::default()
        },
    );
    let mut light = AgentSpec::new("light", "work").with_topic("l");
    light.weight = Some(1);
    let mut heavy = AgentSpec::new("heavy", "work").with_topic("h");
    heavy.weight = Some(3);
    pool.run(light);
    pool.run(heavy);
    for _ in 0..300 {
        pool.send("l", "x");
        pool.send("h", "x");
    }
    wait_until(&[], "200 messages are handled", || {
        snapshot.lock().unwrap().is_some()
    });
    let [light, heavy] = snapshot.lock().unwrap().expect("taken");
    assert!(
        heavy >= 2 * light,
        "weight 3 handled {heavy} and weight 1 handled {light}"
    );
    pool.engine.shutdown().unwrap();
}

#[test]
fn rate_caps_an_agent_at_its_burst_until_tokens_come() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let pool = setup(
        "pool-rate",
        logging_registry(&log, Duration::ZERO),
        PoolConfig {
            policy: Policy::Rate,
            ..PoolConfig::default()
        },
    );
    let mut capped = AgentSpec::new("capped", "log").with_topic("t");
    // Three at once, then one every thousand seconds.
    capped.rate = Some(RateLimit {
        per_second: 0.001,
        burst: 3,
    });
    pool.run(capped);
    pool.run(AgentSpec::new("free", "log").with_topic("t"));
    for _ in 0..10 {
        pool.send("t", "x");
    }
    let count = |id: &str| log.lock().unwrap().iter().filter(|l| *l == id).count();
    wait_until(&[], "the uncapped agent handled everything", || {
        count("free") == 10 && count("capped") == 3
    });
    assert_eq!(count("capped"), 3);
    let queued = pool.engine.agent_info(&pool.namespace, "capped").unwrap();
    assert_eq!(queued.messages_in, 3);
    // Stopping an agent that waits for a token does not wait for the token.
    pool.engine.stop_agent(&pool.namespace, "capped").unwrap();
    pool.engine.shutdown().unwrap();
}

#[test]
fn max_concurrent_caps_the_handlers_running_at_once() {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let (r, m, d) = (running.clone(), most.clone(), done.clone());
    let mut registry = AgentRegistry::new();
    registry.register("nap", move |_| {
        Ok(Nap {
            running: r.clone(),
            most: m.clone(),
            done: d.clone(),
        })
    });
    let pool = setup(
        "pool-cap",
        registry,
        PoolConfig {
            workers: Some(2),
            max_concurrent: Some(1),
            ..PoolConfig::default()
        },
    );
    for i in 0..4 {
        pool.run(AgentSpec::new(format!("nap-{i}"), "nap").with_topic("t"));
    }
    for _ in 0..10 {
        pool.send("t", "x");
    }
    wait_until(&[], "every nap is over", || {
        done.load(Ordering::SeqCst) == 40
    });
    assert_eq!(most.load(Ordering::SeqCst), 1);
    pool.engine.shutdown().unwrap();
}

/// Awaits a timer inside its handler, counting how many handlers are inside at once.
struct Nap {
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    done: Arc<AtomicU64>,
}

impl Agent for Nap {
    async fn handle(&mut self, _ctx: &AgentContext, _message: &Message) -> AgentResult {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn an_async_program_starts_pauses_stops_and_shuts_down_a_pool() {
    // As from `#[tokio::main]` and `#[tokio::main(flavor = "current_thread")]`: the
    // engine's blocking calls run inside another runtime's async context.
    let multi = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for runtime in [multi, single] {
        runtime.block_on(async {
            let mut registry = AgentRegistry::new();
            hook(&mut registry, "echo", |ctx, message| {
                ctx.send("answers", message.payload.clone())?;
                Ok(())
            });
            let pool = setup("pool-async", registry, PoolConfig::default());
            let mut answers = pool.watch("answers");
            pool.run(AgentSpec::new("echo", "echo").with_topic("t"));
            pool.send("t", "one");
            assert_eq!(next_text(&mut answers), "one");
            pool.engine.pause_agent(&pool.namespace, "echo").unwrap();
            pool.engine.resume_agent(&pool.namespace, "echo").unwrap();
            pool.send("t", "two");
            assert_eq!(next_text(&mut answers), "two");
            pool.engine.stop_agent(&pool.namespace, "echo").unwrap();
            pool.engine.shutdown().unwrap();
        });
    }
}
