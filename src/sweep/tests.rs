use super::*;

fn axes(args: &[&str]) -> Vec<Axis> {
    args.iter().map(|a| Axis::parse(a).unwrap()).collect()
}

#[test]
fn the_grid_is_every_combination_times_the_seeds_each_checked() {
    let base = Settings::default();
    let members = plan(
        &base,
        &axes(&["train.learning_rate=1e-3,3e-4", "model.dropout=0,0.2"]),
        2,
        RunKind::LanguageModel,
    )
    .unwrap();
    assert_eq!(members.len(), 8);
    assert_eq!(members[0].name, "learning_rate=1e-3_dropout=0_seed=1337");
    assert_eq!(members[1].name, "learning_rate=1e-3_dropout=0_seed=1338");
    assert_eq!(members[7].settings.train.learning_rate, 3e-4);
    assert_eq!(members[7].settings.model.dropout, 0.2);
    assert_eq!(members[7].settings.train.seed, 1338);
    // Everything else as the base has it.
    assert_eq!(members[7].settings.train.max_iters, base.train.max_iters);
    let names: std::collections::BTreeSet<_> = members.iter().map(|m| &m.name).collect();
    assert_eq!(names.len(), 8, "every member has a folder of its own");
}

#[test]
fn bad_keys_and_values_are_refused_naming_them() {
    let base = Settings::default();
    let err = |args: &[&str], kind| {
        let axes: Result<Vec<Axis>> = args.iter().map(|a| Axis::parse(a)).collect();
        match axes {
            Err(e) => format!("{e:#}"),
            Ok(axes) => format!("{:#}", plan(&base, &axes, 1, kind).unwrap_err()),
        }
    };
    let lm = RunKind::LanguageModel;
    assert!(err(&["train.lerning_rate=1"], lm).contains("lerning_rate"));
    assert!(err(&["train.batch_size=0"], lm).contains("train.batch_size"));
    assert!(err(&["learning_rate=1"], lm).contains("section.name"));
    assert!(err(&["train.learning_rate"], lm).contains("KEY=V1,V2"));
    assert!(err(&["finetune.readout=mean"], lm).contains("--checkpoint"));
    assert!(err(&["train.seed=1,2"], RunKind::Classifier).contains("finetune.*"));
    // A value of the wrong type names its key, with another (good) axis beside it.
    let wrong = err(&["train.learning_rate=1e-3", "train.batch_size=big"], lm);
    assert!(wrong.contains("--set train.batch_size=big"), "{wrong}");
    // Values that would share a folder are refused before anything runs.
    let twice = err(&["train.learning_rate=1e-3,1e-3"], lm);
    assert!(twice.contains("would be one run"), "{twice}");
    let alike = err(&["data.corpus=a b,a/b"], lm);
    assert!(alike.contains("would be one run"), "{alike}");
    let readouts = plan(
        &base,
        &axes(&["finetune.readout=mean,last"]),
        3,
        RunKind::Classifier,
    )
    .unwrap();
    assert_eq!(readouts.len(), 6);
    assert_eq!(readouts[5].settings.finetune.seed, base.finetune.seed + 2);
}

#[test]
fn a_sweep_folder_is_claimed_once_and_only_the_same_sweep_goes_on_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let base = Settings::default();
    let grid = axes(&["train.learning_rate=1e-3,3e-4"]);
    let members = plan(&base, &grid, 1, RunKind::LanguageModel).unwrap();
    let manifest = Manifest {
        kind: RunKind::LanguageModel,
        axes: grid.clone(),
        seeds: 1,
        seed_key: "train.seed".into(),
        checkpoint: None,
        members: members.iter().map(|m| m.name.clone()).collect(),
    };
    assert!(!prepare(&out, &manifest, &members).unwrap());
    assert!(
        prepare(&out, &manifest, &members).unwrap(),
        "the same sweep again"
    );
    let other = Manifest {
        seeds: 2,
        ..manifest.clone()
    };
    assert!(
        format!("{:#}", prepare(&out, &other, &members).unwrap_err()).contains("another sweep")
    );
    // A folder with a user's files is never taken.
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), "mine").unwrap();
    assert!(prepare(&theirs, &manifest, &members).is_err());
    assert_eq!(
        std::fs::read_to_string(theirs.join("notes.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn mean_and_sample_std() {
    assert_eq!(mean_std(&[]), (None, None));
    assert_eq!(mean_std(&[2.0]), (Some(2.0), None));
    let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
    assert_eq!(m, Some(2.0));
    assert!((s.unwrap() - 1.0).abs() < 1e-12);
}
