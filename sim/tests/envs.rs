//! Behaviour of the env API: names, errors, time limits, wrappers, vectorization.

use reflex_msgs::{Action, ActionSpace};
use reflex_sim::pomdp::{Flicker, ObsWrapper, SensorNoise, VelocityMask};
use reflex_sim::{make, Env, SimError, VecEnv, ENVS};

#[test]
fn every_env_is_made_by_short_name_and_gymnasium_id() {
    for entry in ENVS {
        let by_short = make(entry.short).unwrap();
        let by_id = make(entry.gym_id).unwrap();
        assert_eq!(by_short.id(), entry.gym_id);
        assert_eq!(by_id.id(), entry.gym_id);
        assert_eq!(
            make(&entry.short.to_uppercase()).unwrap().id(),
            entry.gym_id
        );
    }
    let spaces = |name: &str| {
        let env = make(name).unwrap();
        (
            env.observation_space().low.len(),
            env.action_space().clone(),
            env.max_episode_steps(),
        )
    };
    assert_eq!(
        spaces("cartpole"),
        (4, ActionSpace::Discrete { n: 2 }, Some(500))
    );
    assert_eq!(
        spaces("acrobot"),
        (6, ActionSpace::Discrete { n: 3 }, Some(500))
    );
    assert_eq!(
        spaces("mountaincar"),
        (2, ActionSpace::Discrete { n: 3 }, Some(200))
    );
    let (dim, space, limit) = spaces("pendulum");
    assert_eq!((dim, limit), (3, Some(200)));
    let ActionSpace::Box(b) = space else {
        panic!("pendulum is continuous")
    };
    assert_eq!((b.low.clone(), b.high.clone()), (vec![-2.0], vec![2.0]));
    assert_eq!(spaces("mountaincarcontinuous").2, Some(999));
}

#[test]
fn unknown_names_list_the_known_ones() {
    for bad in ["cartpoel", "cartpole-blurred", "", "-masked", "CartPole-v0"] {
        match make(bad) {
            Err(SimError::UnknownEnv { name, known }) => {
                assert_eq!(name, bad);
                assert!(known.contains("cartpole (CartPole-v1)"), "{known}");
            }
            Err(other) => panic!("{bad}: wrong error {other}"),
            Ok(env) => panic!("{bad}: made {}", env.id()),
        }
    }
}

#[test]
fn stepping_before_reset_or_with_bad_actions_is_an_error() {
    let mut env = make("cartpole").unwrap();
    assert!(matches!(
        env.step(&Action::Discrete(0)),
        Err(SimError::NotReset { .. })
    ));
    env.reset(Some(0));
    let before = env.state();
    for bad in [Action::Discrete(2), Action::Continuous(vec![0.5])] {
        assert!(
            matches!(env.step(&bad), Err(SimError::InvalidAction { .. })),
            "{bad:?}"
        );
    }
    assert_eq!(env.state(), before, "a refused action changes nothing");

    let mut env = make("pendulum").unwrap();
    env.reset(Some(0));
    for bad in [
        Action::Discrete(0),
        Action::Continuous(vec![]),
        Action::Continuous(vec![0.1, 0.2]),
        Action::Continuous(vec![f32::NAN]),
        Action::Continuous(vec![f32::INFINITY]),
    ] {
        let err = env.step(&bad).unwrap_err();
        assert!(
            err.to_string().contains("is not valid for action space"),
            "{err}"
        );
    }
    assert!(matches!(
        env.set_state(&[1.0]),
        Err(SimError::StateShape {
            expected: 2,
            found: 1,
            ..
        })
    ));
}

#[test]
fn out_of_bound_torque_is_clipped_like_gymnasium() {
    let mut a = make("pendulum").unwrap();
    let mut b = make("pendulum").unwrap();
    a.set_state(&[0.3, -0.2]).unwrap();
    b.set_state(&[0.3, -0.2]).unwrap();
    let big = a.step(&Action::Continuous(vec![50.0])).unwrap();
    let max = b.step(&Action::Continuous(vec![2.0])).unwrap();
    assert_eq!(a.state(), b.state());
    assert_eq!(
        big.reward, max.reward,
        "Pendulum's cost uses the clipped torque"
    );
}

#[test]
fn time_limit_truncates_exactly_at_the_registered_step() {
    // Pendulum never terminates, so every episode is cut by the 200-step limit.
    let mut env = make("pendulum").unwrap();
    env.reset(Some(3));
    for t in 1..=200 {
        let step = env.step(&Action::Continuous(vec![0.0])).unwrap();
        assert!(!step.terminated);
        assert_eq!(step.truncated, t == 200, "t={t}");
        assert_eq!(env.elapsed_steps(), t);
    }
    env.reset(None);
    assert_eq!(env.elapsed_steps(), 0);
}

#[test]
fn cartpole_terminates_when_the_pole_falls() {
    let mut env = make("cartpole").unwrap();
    env.reset(Some(0));
    let mut steps = 0;
    loop {
        let step = env.step(&Action::Discrete(1)).unwrap();
        steps += 1;
        assert_eq!(
            step.reward, 1.0,
            "reward 1 on every step, the last included"
        );
        if step.done() {
            assert!(step.terminated && !step.truncated);
            break;
        }
    }
    // Always pushing right tips the pole over within a few dozen steps.
    assert!((5..60).contains(&steps), "{steps}");
    let theta = env.state()[2];
    assert!(theta.abs() > 12.0_f64.to_radians(), "{theta}");
    // Stepping on after the fall earns nothing (Gymnasium warns and returns 0).
    let after = env.step(&Action::Discrete(1)).unwrap();
    assert_eq!((after.reward, after.terminated), (0.0, true));
    // A cart that rolls just past the edge and is pushed back comes back inside
    // the bounds: as in Gymnasium, a step that is not terminal earns 1 again, and
    // leaving them once more earns 0 (the episode has already ended once).
    env.set_state(&[2.395, 0.3, 0.0, 0.0]).unwrap();
    let over = env.step(&Action::Discrete(0)).unwrap();
    assert_eq!(
        (over.reward, over.terminated),
        (1.0, true),
        "the first fall"
    );
    let mut back = false;
    for k in 0..10 {
        let step = env.step(&Action::Discrete(0)).unwrap();
        if !step.terminated {
            back = true;
            assert_eq!(
                step.reward, 1.0,
                "step {k} past the fall, inside the bounds"
            );
            break;
        }
        assert_eq!(step.reward, 0.0, "step {k}: still out");
    }
    assert!(back, "the cart never came back inside the bounds");
    let again = (0..200)
        .map(|_| env.step(&Action::Discrete(1)).unwrap())
        .find(|s| s.terminated)
        .expect("pushed right, the cart leaves again");
    assert_eq!(again.reward, 0.0, "fallen a second time");
    env.reset(None);
    assert_eq!(env.step(&Action::Discrete(1)).unwrap().reward, 1.0);
}

#[test]
fn same_seed_same_episode_other_seed_other_start() {
    let mut a = make("acrobot").unwrap();
    let mut b = make("acrobot").unwrap();
    assert_eq!(a.reset(Some(11)), b.reset(Some(11)));
    assert_ne!(a.reset(Some(11)).to_vec(), b.reset(Some(12)).to_vec());
    // reset(None) continues the stream rather than repeating the seeded start.
    let first = a.reset(Some(5)).to_vec();
    assert_ne!(a.reset(None).to_vec(), first);
}

#[test]
fn masking_keeps_positions_and_angles() {
    let mut full = make("cartpole").unwrap();
    let mut masked = make("cartpole-masked").unwrap();
    assert_eq!(masked.observation_space().low.len(), 2);
    full.reset(Some(4));
    masked.reset(Some(4));
    for _ in 0..20 {
        full.step(&Action::Discrete(0)).unwrap();
        masked.step(&Action::Discrete(0)).unwrap();
        assert_eq!(masked.obs(), &[full.obs()[0], full.obs()[2]]);
    }
    let pendulum = make("pendulum-masked").unwrap();
    assert_eq!(pendulum.observation_space().high, vec![1.0, 1.0]);
    let err = ObsWrapper::new(make("cartpole").unwrap(), VelocityMask::new(&[0, 9]))
        .err()
        .unwrap();
    assert!(err.to_string().contains("index 9 is outside"), "{err}");
}

#[test]
fn flicker_zeroes_about_p_of_the_frames_reproducibly() {
    let run = |seed| {
        let mut env =
            ObsWrapper::new(make("pendulum").unwrap(), Flicker::new(0.3).unwrap()).unwrap();
        env.reset(Some(seed));
        let mut zeroed = 0;
        let mut trace = Vec::new();
        for _ in 0..4000 {
            if env.step(&Action::Continuous(vec![0.0])).unwrap().done() {
                env.reset(None);
            }
            zeroed += usize::from(env.obs().iter().all(|&v| v == 0.0));
            trace.extend_from_slice(env.obs());
        }
        (zeroed, trace)
    };
    let (zeroed, trace) = run(1);
    let rate = zeroed as f64 / 4000.0;
    assert!((0.27..0.33).contains(&rate), "flicker rate {rate}");
    assert_eq!(run(1).1, trace, "same seed, same flicker");
    assert_ne!(run(2).1, trace);
    assert!(Flicker::new(1.5).is_err() && Flicker::new(-0.1).is_err());
}

#[test]
fn sensor_noise_has_the_requested_spread() {
    let mut clean = make("mountaincar").unwrap();
    let mut noisy = ObsWrapper::new(
        make("mountaincar").unwrap(),
        SensorNoise::new(0.05).unwrap(),
    )
    .unwrap();
    clean.reset(Some(8));
    noisy.reset(Some(8));
    let mut errors = Vec::new();
    for _ in 0..150 {
        clean.step(&Action::Discrete(2)).unwrap();
        noisy.step(&Action::Discrete(2)).unwrap();
        errors.extend(
            clean
                .obs()
                .iter()
                .zip(noisy.obs())
                .map(|(c, n)| f64::from(n - c)),
        );
    }
    let n = errors.len() as f64;
    let mean = errors.iter().sum::<f64>() / n;
    let std = (errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!((0.045..0.055).contains(&std), "std {std}");
    assert!(SensorNoise::new(f64::NAN).is_err() && SensorNoise::new(-1.0).is_err());
    assert!(make("pendulum-noisy").unwrap().observation_space().high[0].is_infinite());
}

#[test]
fn vec_env_matches_separate_envs_and_resets_automatically() {
    let n = 3;
    let mut vec = VecEnv::new("cartpole", n).unwrap();
    let mut singles: Vec<_> = (0..n).map(|_| make("cartpole").unwrap()).collect();
    vec.reset(100);
    for (i, env) in singles.iter_mut().enumerate() {
        env.reset(Some(100 + i as u64));
    }
    let mut finished = 0;
    for t in 0..300 {
        let actions: Vec<Action> = (0..n)
            .map(|i| Action::Discrete(((t + i) % 2) as u32))
            .collect();
        let steps = vec.step(&actions).unwrap().to_vec();
        for (i, env) in singles.iter_mut().enumerate() {
            let step = env.step(&actions[i]).unwrap();
            assert_eq!(steps[i], step);
            if step.done() {
                assert_eq!(
                    vec.final_obs(i).unwrap(),
                    env.obs(),
                    "final obs of the ended episode"
                );
                env.reset(None);
                finished += 1;
            } else {
                assert!(vec.final_obs(i).is_none());
            }
            assert_eq!(&vec.obs()[i * 4..(i + 1) * 4], env.obs());
        }
    }
    let episodes = vec.drain_episodes();
    assert_eq!(episodes.len(), finished);
    assert!(finished > 3);
    assert!(episodes
        .iter()
        .all(|e| e.episode_return == f64::from(e.length) && e.terminated));
    assert!(vec.drain_episodes().is_empty());
}

#[test]
fn vec_env_refuses_bad_actions_without_stepping() {
    let mut vec = VecEnv::new("mountaincar", 2).unwrap();
    vec.reset(0);
    let before = vec.obs().to_vec();
    let err = vec.step(&[Action::Discrete(0)]).unwrap_err();
    assert!(matches!(
        err,
        SimError::ActionCount {
            expected: 2,
            found: 1
        }
    ));
    assert!(vec
        .step(&[Action::Discrete(0), Action::Discrete(7)])
        .is_err());
    assert_eq!(vec.obs(), before.as_slice());
    assert!(VecEnv::from_envs(vec![]).is_err());
    let mixed = vec![make("cartpole").unwrap(), make("acrobot").unwrap()];
    assert!(VecEnv::from_envs(mixed).is_err());
}

#[test]
fn undrained_episode_summaries_are_bounded_and_counted() {
    use reflex_sim::vec_env::MAX_PENDING_EPISODES;
    let mut vec = VecEnv::new("cartpole", 4).unwrap();
    vec.reset(0);
    let push_right = vec![Action::Discrete(1); 4];
    let mut ended = 0u64;
    while ended < MAX_PENDING_EPISODES as u64 + 100 {
        ended += vec
            .step(&push_right)
            .unwrap()
            .iter()
            .filter(|s| s.done())
            .count() as u64;
    }
    let kept = vec.drain_episodes();
    assert_eq!(kept.len(), MAX_PENDING_EPISODES);
    assert_eq!(vec.dropped_episodes(), ended - MAX_PENDING_EPISODES as u64);
}

/// `set_state` refuses NaN and infinity with a clear error, and a state many
/// periods out (1e300 rad: a corrupt reference file) steps in bounded time
/// instead of looping once per period as Gymnasium's `wrap` does.
#[test]
fn set_state_refuses_non_finite_values_and_survives_huge_angles() {
    for name in [
        "cartpole",
        "acrobot",
        "mountaincar",
        "pendulum",
        "mountaincarcontinuous",
    ] {
        let mut env = make(name).unwrap();
        let dim = env.state().len();
        let mut state = vec![0.0; dim];
        state[dim - 1] = f64::NAN;
        let err = env.set_state(&state).unwrap_err().to_string();
        assert!(err.contains("not a finite number"), "{name}: {err}");
    }
    let mut env = make("acrobot").unwrap();
    env.set_state(&[1e300, -1e300, 0.0, 0.0]).unwrap();
    let step = env.step(&Action::Discrete(1)).unwrap();
    let state = env.state();
    assert!(
        state[..2]
            .iter()
            .all(|a| (-std::f64::consts::PI..=std::f64::consts::PI).contains(a)),
        "{state:?} {step:?}"
    );
}
