//! `Policy::step` allocates nothing after warm-up (issue 8): counted with a global
//! allocator that tallies the allocations of the thread under test.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{cartpole_spec, kinds, network};
use reflex_daemon::{Engine, LoadOptions, Policy};
use reflex_trainer::export::q_network_onnx;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Allocations made by 1,000 steps after 10 warm-up steps.
fn allocations_per_1000_steps(policy: &mut Policy) -> u64 {
    let obs = [0.01f32, -0.2, 0.03, 0.4];
    for _ in 0..10 {
        policy.step(&obs).unwrap();
    }
    let before = allocations();
    let mut checksum = 0.0f32;
    for i in 0..1000 {
        let x = [obs[0], obs[1] + i as f32 * 1e-3, obs[2], obs[3]];
        if let reflex_daemon::PolicyOutput::Discrete { q, .. } = policy.step(&x).unwrap() {
            checksum += q[0];
        }
    }
    let after = allocations();
    assert!(checksum.is_finite());
    after - before
}

#[test]
fn stepping_a_policy_allocates_nothing_after_warm_up() {
    for (seed, (name, config, heads)) in kinds().into_iter().enumerate() {
        let bytes =
            q_network_onnx(&network(&config, heads, seed as u64), &cartpole_spec()).unwrap();
        let mut policy = Policy::from_bytes(&bytes).unwrap();
        assert_eq!(policy.engine(), Engine::Native, "{name}");
        assert_eq!(allocations_per_1000_steps(&mut policy), 0, "{name}");
    }
}

/// A recurrent (DRQN, LSTM-64) policy on the native evaluator: stepping,
/// feeding back the applied action and resetting at episode ends allocate
/// nothing either.
#[test]
fn stepping_a_recurrent_policy_allocates_nothing_after_warm_up() {
    use reflex_msgs::Action;
    use reflex_trainer::algo::drqn::{Drqn, DrqnConfig};
    use reflex_trainer::algo::Agent;

    let agent = Drqn::new(DrqnConfig::default(), 4, 2, 3, &candle_core::Device::Cpu).unwrap();
    let mut spec = cartpole_spec();
    spec.algorithm = "drqn".into();
    let mut policy = Policy::from_bytes(&agent.to_onnx(&spec).unwrap()).unwrap();
    assert!(policy.is_recurrent());
    assert_eq!(policy.engine(), Engine::Native);
    let mut run = |steps: usize| {
        let mut checksum = 0.0f32;
        for i in 0..steps {
            let obs = [0.01f32, -0.2 + i as f32 * 1e-3, 0.03, 0.4];
            let action = match policy.step(&obs).unwrap() {
                reflex_daemon::PolicyOutput::Discrete { action, q } => {
                    checksum += q[0];
                    action
                }
                _ => unreachable!("a Q policy"),
            };
            policy.observe_applied(&Action::Discrete(action));
            if i % 100 == 99 {
                policy.reset();
            }
        }
        assert!(checksum.is_finite());
    };
    run(10);
    let before = allocations();
    run(1000);
    assert_eq!(allocations() - before, 0);
}

#[test]
fn the_counter_sees_tract_allocate() {
    // The same measurement on tract must count its per-run tensors: proof that the
    // zero above is a measurement, not a counter that never moves.
    let (_, config, heads) = kinds().remove(0);
    let bytes = q_network_onnx(&network(&config, heads, 0), &cartpole_spec()).unwrap();
    let mut policy = Policy::from_bytes_with(&bytes, LoadOptions { native: false }).unwrap();
    assert_eq!(policy.engine(), Engine::Tract);
    assert!(allocations_per_1000_steps(&mut policy) >= 1000);
}
