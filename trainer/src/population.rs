//! `reflex-train run --population P`: P seeds of one DQN, DDPG or TD3
//! configuration trained at once on stacked networks
//! ([`reflex_trainer::algo::population`]).
//!
//! Each member writes a complete run folder, `OUT/member-K/`, with its own
//! seed (the run's seed + K) in its config.toml: metrics.csv, checkpoints,
//! best/, policy.onnx, eval.json and curve.png, exactly what `run` writes
//! for that seed, so `eval`, `export` and `resume` work on a member as on
//! any run (a resumed member trains on alone). `OUT/population.json` ranks
//! the members by their final evaluation and `OUT/curve.png` draws them
//! together.

use std::cell::RefCell;

use reflex_trainer::algo::population::{build_population, check_population, train_population};

use super::*;

/// One member's line in `population.json`.
#[derive(Serialize)]
struct MemberSummary {
    member: usize,
    seed: u64,
    run: PathBuf,
    final_mean_return: f64,
    /// The final evaluation of the member's best periodic policy
    /// (`best/eval.json`), when it has one.
    best_policy_mean_return: Option<f64>,
}

/// `population.json`.
#[derive(Serialize)]
struct PopulationSummary<'a> {
    env: &'a str,
    algo: &'a str,
    steps: u64,
    members: Vec<MemberSummary>,
    /// The member with the best final evaluation.
    best_member: usize,
    /// Median of the members' final evaluations.
    median_final_return: f64,
    /// Wall-clock seconds of training and evaluation.
    seconds: f64,
}

/// A member's observer that also draws the population's progress bar: the
/// members' recent returns, least, mean and most.
struct Member<'a> {
    inner: &'a mut RunObserver,
    index: usize,
    board: &'a RefCell<Vec<Option<f64>>>,
    bar: ProgressBar,
}

impl Observer for Member<'_> {
    fn episode(&mut self, progress: &Progress, episode_return: f64, length: u32) {
        self.inner.episode(progress, episode_return, length);
        let recent = &self.inner.recent_returns;
        let window = &recent[recent.len().saturating_sub(10)..];
        let mut board = self.board.borrow_mut();
        board[self.index] = Some(window.iter().sum::<f64>() / window.len() as f64);
        let known: Vec<f64> = board.iter().flatten().copied().collect();
        let mean = known.iter().sum::<f64>() / known.len() as f64;
        let (lo, hi) = known
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &r| {
                (lo.min(r), hi.max(r))
            });
        self.bar.set_position(progress.step);
        self.bar.set_message(format!(
            "members' return(10): min {lo:.1} mean {mean:.1} max {hi:.1}  explore {:.3}",
            progress.exploration
        ));
    }

    fn trained(&mut self, progress: &Progress) {
        self.inner.trained(progress);
    }

    fn periodic(&mut self, progress: &Progress, agent: &mut dyn Agent) -> Result<(), TrainError> {
        self.inner.periodic(progress, agent)
    }

    fn interrupted(&self) -> bool {
        self.inner.interrupted()
    }
}

/// Trains `members` seeds of `config` (DQN, DDPG or TD3) together into
/// `out/member-K`.
pub(crate) fn run_population(
    config: &RunConfig,
    out: &Path,
    quiet: bool,
    members: usize,
    device: &Device,
) -> anyhow::Result<()> {
    if members < 2 {
        bail!("--population needs at least 2 members, got {members}");
    }
    let configs: Vec<RunConfig> = (0..members as u64)
        .map(|k| RunConfig {
            seed: config.seed.wrapping_add(k),
            ..config.clone()
        })
        .collect();
    let dirs = member_dirs(out, members);
    check_population(config)?;
    crate::check_learning_starts(config)?;
    start_fresh(out)?;
    for (dir, member_config) in dirs.iter().zip(&configs) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(
            &dir.join("config.toml"),
            toml::to_string(member_config)?.as_bytes(),
        )?;
    }
    train_members(&configs, &dirs, out, quiet, false, device)
}

/// `OUT/member-0`, `OUT/member-1`, …
fn member_dirs(out: &Path, members: usize) -> Vec<PathBuf> {
    (0..members)
        .map(|k| out.join(format!("member-{k}")))
        .collect()
}

/// Whether `dir` holds a population run (`member-0/config.toml`, no
/// config.toml of its own).
pub(crate) fn is_population(dir: &Path) -> bool {
    !dir.join("config.toml").exists() && dir.join("member-0").join("config.toml").exists()
}

/// `reflex-train resume OUT` for a population: every member loads the
/// newest checkpoint step that all of them have, and they train on together
/// to the configured steps.
pub(crate) fn resume_population(out: &Path, quiet: bool, device: &Device) -> anyhow::Result<()> {
    let members = (0..)
        .take_while(|k| out.join(format!("member-{k}")).join("config.toml").exists())
        .count();
    let dirs = member_dirs(out, members);
    let configs = dirs
        .iter()
        .map(|dir| read_config(dir))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (k, c) in configs.iter().enumerate() {
        let same = RunConfig {
            seed: configs[0].seed,
            ..c.clone()
        };
        if same != configs[0] {
            bail!(
                "{}: member-{k}'s config differs from member-0's in more than the seed",
                out.display()
            );
        }
    }
    check_population(&configs[0])?;
    train_members(&configs, &dirs, out, quiet, true, device)
}

/// The newest checkpoint step every member has (members checkpoint
/// together, but a crash can stop the population part-way through saving),
/// as each member's checkpoint folder.
fn common_checkpoints(dirs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let lists = dirs
        .iter()
        .map(|dir| checkpoint::list(dir))
        .collect::<Result<Vec<_>, _>>()?;
    let name = |p: &PathBuf| p.file_name().map(|n| n.to_os_string());
    let newest = lists[0]
        .iter()
        .rev()
        .filter_map(name)
        .find(|n| {
            lists
                .iter()
                .all(|l| l.iter().any(|p| name(p).as_ref() == Some(n)))
        })
        .with_context(|| {
            format!(
                "{}: no checkpoint step that every member has to resume from",
                dirs[0].parent().unwrap_or(Path::new(".")).display()
            )
        })?;
    Ok(dirs
        .iter()
        .map(|dir| dir.join("checkpoints").join(&newest))
        .collect())
}

/// Trains the members `configs` (one per seed; otherwise equal) together,
/// each into its folder in `dirs`, then ends each member's run and writes
/// the population's summary and curve into `out`; `resume` continues from
/// the members' checkpoints.
fn train_members(
    configs: &[RunConfig],
    dirs: &[PathBuf],
    out: &Path,
    quiet: bool,
    resume: bool,
    device: &Device,
) -> anyhow::Result<()> {
    let config = &configs[0];
    let members = configs.len();
    let started = Instant::now();
    let mut envs = (0..members)
        .map(|_| make(&config.env))
        .collect::<Result<Vec<_>, _>>()?;
    let seeds: Vec<u64> = configs.iter().map(|c| c.seed).collect();
    let mut population = build_population(config, envs[0].as_ref(), &seeds, device)?;
    if resume {
        let checkpoints = common_checkpoints(dirs)?;
        for (k, path) in checkpoints.iter().enumerate() {
            checkpoint::load(path, population.member(k), device)?;
        }
        population.restack()?;
        eprintln!(
            "resuming a population of {members} in {} from step {}",
            out.display(),
            population.steps_done()
        );
    }
    let bar = steps_bar(quiet, config.steps, population.steps_done())?;
    let resume_from = resume.then(|| population.steps_done());
    let mut observers = configs
        .iter()
        .zip(dirs)
        .enumerate()
        .map(|(k, (c, dir))| {
            let label = format!("member-{k} (seed {})", c.seed);
            run_observer(
                c,
                dir,
                quiet,
                resume_from,
                envs[0].as_ref(),
                bar.clone(),
                Some(label),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if quiet {
        eprintln!(
            "training a population of {members} {} learners on {} for {} steps (seeds {}..={})",
            config.algo,
            config.env,
            config.steps,
            seeds[0],
            seeds[members - 1]
        );
    }
    let board = RefCell::new(vec![None; members]);
    {
        let mut wrapped: Vec<Member<'_>> = observers
            .iter_mut()
            .enumerate()
            .map(|(index, inner)| Member {
                inner,
                index,
                board: &board,
                bar: bar.clone(),
            })
            .collect();
        let mut refs: Vec<&mut dyn Observer> =
            wrapped.iter_mut().map(|m| m as &mut dyn Observer).collect();
        let periodic = gcd(config.eval_interval, config.checkpoint_interval);
        stop_on_signal()?;
        train_population(
            population.as_mut(),
            &mut envs,
            config.steps,
            &seeds,
            periodic,
            &mut refs,
        )?;
    }
    bar.finish_and_clear();
    if stop_requested() && population.steps_done() < config.steps {
        for (k, observer) in observers.iter_mut().enumerate() {
            save_interrupted(&dirs[k], population.member(k), observer)?;
        }
        eprintln!(
            "interrupted at step {} of {}: every member checkpointed; `reflex-train resume {}` \
             goes on",
            population.steps_done(),
            config.steps,
            out.display()
        );
        std::process::exit(130);
    }
    let mut summaries = Vec::with_capacity(members);
    for (k, (observer, env)) in observers.into_iter().zip(&mut envs).enumerate() {
        let mean = finish_run(
            &configs[k],
            &dirs[k],
            population.member(k),
            observer,
            env.as_mut(),
        )?;
        let best = fs::read(dirs[k].join(BEST_DIR).join("eval.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|v| v["mean_return"].as_f64());
        summaries.push(MemberSummary {
            member: k,
            seed: seeds[k],
            run: dirs[k].clone(),
            final_mean_return: mean,
            best_policy_mean_return: best,
        });
    }
    let mut finals: Vec<f64> = summaries.iter().map(|m| m.final_mean_return).collect();
    finals.sort_by(f64::total_cmp);
    let median = if members % 2 == 1 {
        finals[members / 2]
    } else {
        0.5 * (finals[members / 2 - 1] + finals[members / 2])
    };
    let best_member = summaries
        .iter()
        .max_by(|a, b| a.final_mean_return.total_cmp(&b.final_mean_return))
        .map_or(0, |m| m.member);
    let summary = PopulationSummary {
        env: &config.env,
        algo: &config.algo,
        steps: config.steps,
        members: summaries,
        best_member,
        median_final_return: median,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_atomic(
        &out.join("population.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    // After the members' eval.json lines, the population's record is the
    // last line of stdout, as a single run's eval record is.
    println!("{}", serde_json::to_string(&summary)?);
    let curves: Vec<(String, PathBuf)> = dirs
        .iter()
        .zip(&seeds)
        .map(|(dir, seed)| (format!("seed {seed}"), dir.join("metrics.csv")))
        .collect();
    let title = format!(
        "{} · {} · population of {members} (seeds {}..={})",
        config.env,
        config.algo,
        seeds[0],
        seeds[members - 1]
    );
    if let Err(e) = reflex_trainer::plot::draw_population(&curves, &out.join("curve.png"), &title) {
        eprintln!("warning: curve.png not drawn: {e}");
    }
    eprintln!(
        "population of {members}: final greedy returns median {median:.1}, best member-{best_member} ({:.1}); {:.1}s; {}",
        summary.members[best_member].final_mean_return,
        summary.seconds,
        out.join("population.json").display()
    );
    Ok(())
}
