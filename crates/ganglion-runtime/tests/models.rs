#![allow(clippy::disallowed_methods)] // tests read the clock to build deadlines
//! The runtime against the real bundled models.

use std::time::{Duration, Instant};

use ganglion_runtime::vision::{self, decode_faces, max_face_score};
use ganglion_runtime::zoo::{self, Bundled};
use ganglion_runtime::{Model, RunError, Runtime, RuntimeConfig};
use ganglion_types::proto::ServeError;
use ganglion_types::{DType, ModelHash, Tensor};

fn blazeface() -> Model {
    Model::load("blazeface", zoo::BLAZEFACE_ONNX).expect("bundled BlazeFace loads")
}

#[test]
fn finds_the_astronauts_face() {
    let model = blazeface();
    let image = vision::decode_image(zoo::ASTRONAUT_PNG).unwrap();
    let outputs = model
        .run_once(&[vision::blazeface_input(&image).unwrap()])
        .unwrap();
    let score = max_face_score(&outputs).unwrap();
    assert!(
        score > 0.9,
        "astronaut face score {score} (onnxruntime says 0.92)"
    );
    let faces = decode_faces(&outputs, 0.5).unwrap();
    assert_eq!(faces.len(), 1, "{faces:?}");
    let face = faces[0];
    // The astronaut's face is in the upper middle of the picture.
    let (cx, cy) = (
        (face.x_min + face.x_max) / 2.0,
        (face.y_min + face.y_max) / 2.0,
    );
    assert!(
        (0.3..0.7).contains(&cx) && (0.1..0.5).contains(&cy),
        "{face:?}"
    );
}

#[test]
fn hand_model_runs_and_decodes() {
    let model = Model::load("hand-landmark", zoo::HAND_LANDMARK_ONNX).unwrap();
    assert_eq!(
        model.inputs()[0].shape,
        vec![Some(1), Some(3), Some(224), Some(224)]
    );
    let image = vision::decode_image(zoo::CAMERA_PNG).unwrap();
    let outputs = model
        .run_once(&[Bundled::HandLandmark.input(&image).unwrap()])
        .unwrap();
    let hand = vision::decode_hand(&outputs).unwrap();
    assert!((0.0..=1.0).contains(&hand.presence));
    // The camera man holds no hand up to the camera.
    assert!(hand.presence < 0.5, "presence {}", hand.presence);
}

#[test]
fn wrong_shapes_and_types_are_refused_with_the_expected_shape() {
    let model = blazeface();
    let wrong_shape = Tensor::from_f32(&[1, 3, 64, 64], &vec![0.0; 3 * 64 * 64]).unwrap();
    let err = model.run_once(&[wrong_shape]).unwrap_err();
    assert!(
        matches!(&err, RunError::BadInput(text) if text.contains("[1, 3, 128, 128]")),
        "{err}"
    );

    let wrong_type = Tensor {
        dtype: DType::U8,
        shape: vec![1, 3, 128, 128],
        data: vec![0; 3 * 128 * 128],
    };
    assert!(matches!(
        model.run_once(&[wrong_type]),
        Err(RunError::BadInput(_))
    ));

    let lying = Tensor {
        dtype: DType::F32,
        shape: vec![1, 3, 128, 128],
        data: vec![0; 12],
    };
    assert!(matches!(
        model.run_once(&[lying]),
        Err(RunError::BadInput(_))
    ));

    assert!(matches!(
        model.run_once(&[]),
        Err(RunError::InputCount {
            expected: 1,
            got: 0
        })
    ));
}

#[test]
fn garbage_is_not_a_model() {
    assert!(Model::load("junk", b"definitely not onnx").is_err());
    assert!(Model::load("Bad Alias!", zoo::BLAZEFACE_ONNX).is_err());
}

#[tokio::test]
async fn a_full_queue_answers_busy_at_once() {
    let runtime = Runtime::new(
        vec![blazeface()],
        RuntimeConfig {
            workers: 1,
            queue: 2,
            ..RuntimeConfig::default()
        },
    );
    let hash = runtime.models().next().unwrap().hash();
    let image = vision::decode_image(zoo::ASTRONAUT_PNG).unwrap();
    let input = vision::blazeface_input(&image).unwrap();
    let far = Instant::now() + Duration::from_secs(30);

    // Fill the worker and the queue, then one more.
    let mut pending = Vec::new();
    let mut busy = None;
    for _ in 0..8 {
        let asked = Instant::now();
        match runtime.submit(&hash, vec![input.clone()], far, Instant::now()) {
            Ok(rx) => pending.push(rx),
            Err(e) => {
                busy = Some((e, asked.elapsed()));
                break;
            }
        }
    }
    let (err, took) = busy.expect("the queue filled up");
    assert!(matches!(err, ServeError::Busy { .. }), "{err:?}");
    assert!(took < Duration::from_millis(5), "busy took {took:?}");
    for rx in pending {
        let outputs = rx.await.unwrap().unwrap();
        assert!(max_face_score(&outputs).unwrap() > 0.9);
    }
}

#[tokio::test]
async fn a_request_that_cannot_meet_its_deadline_is_refused_not_queued() {
    let runtime = Runtime::new(
        vec![blazeface()],
        RuntimeConfig {
            workers: 1,
            queue: 64,
            ..RuntimeConfig::default()
        },
    );
    let hash = runtime.models().next().unwrap().hash();
    let image = vision::decode_image(zoo::ASTRONAUT_PNG).unwrap();
    let input = vision::blazeface_input(&image).unwrap();
    // Warm up: the runtime learns how long one inference takes.
    let far = Instant::now() + Duration::from_secs(30);
    runtime
        .infer(&hash, vec![input.clone()], far)
        .await
        .unwrap();
    let per_run = runtime.service_time(&hash).unwrap();

    // Queue ten, then ask for an answer within two inferences' time.
    let queued: Vec<_> = (0..10)
        .map(|_| {
            runtime
                .submit(&hash, vec![input.clone()], far, Instant::now())
                .unwrap()
        })
        .collect();
    let tight = Instant::now() + per_run * 2;
    let err = runtime
        .submit(&hash, vec![input.clone()], tight, Instant::now())
        .unwrap_err();
    assert!(
        matches!(err, ServeError::Busy { queued } if queued >= 8),
        "{err:?}"
    );
    for rx in queued {
        rx.await.unwrap().unwrap();
    }
}

/// Four robots' frames that reach the provider together run as one batch, and each robot gets
/// the answer its own frame would have got alone.
#[tokio::test]
async fn requests_arriving_together_run_as_one_batch_with_the_same_answers() {
    use ganglion_runtime::LoadOptions;
    let options = LoadOptions {
        batch_max: 4,
        ..LoadOptions::default()
    };
    let batched = Model::load_with("hand-landmark", zoo::HAND_LANDMARK_ONNX, &options).unwrap();
    assert_eq!(
        batched.batch_max(),
        4,
        "the hand model stacks along its first axis"
    );
    let alone = Model::load("hand-landmark", zoo::HAND_LANDMARK_ONNX).unwrap();
    let frames: Vec<_> = [zoo::ASTRONAUT_PNG, zoo::CAMERA_PNG]
        .iter()
        .map(|png| vision::hand_input(&vision::decode_image(png).unwrap()).unwrap())
        .collect();
    let mut state = alone.state().unwrap();
    let expected: Vec<_> = frames
        .iter()
        .map(|f| alone.run(&mut state, std::slice::from_ref(f)).unwrap())
        .collect();
    assert_ne!(expected[0], expected[1], "two different frames");

    let runtime = Runtime::new(
        vec![batched],
        RuntimeConfig {
            workers: 1,
            queue: 16,
            batch_window: Duration::from_millis(50),
        },
    );
    let hash = runtime.models().next().unwrap().hash();
    let far = Instant::now() + Duration::from_secs(30);
    let pending: Vec<_> = (0..4)
        .map(|i| {
            let frame = frames[i % 2].clone();
            runtime
                .submit(&hash, vec![frame], far, Instant::now())
                .unwrap()
        })
        .collect();
    for (i, rx) in pending.into_iter().enumerate() {
        let outputs = rx.await.unwrap().unwrap();
        let want = &expected[i % 2];
        assert_eq!(outputs.len(), want.len());
        for (got, want) in outputs.iter().zip(want) {
            assert_eq!(got.shape, want.shape, "request {i}");
            let (g, w) = (got.to_f32().unwrap(), want.to_f32().unwrap());
            let worst = g
                .iter()
                .zip(&w)
                .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
                .fold(0.0, f32::max);
            assert!(worst < 1e-3, "request {i}: differs by {worst}");
        }
    }
    let stats = runtime.batch_stats(&hash).unwrap();
    assert!(stats.batches >= 1, "{stats:?}");
    assert!(
        stats.requests >= 3,
        "at least three requests shared a run: {stats:?}"
    );
}

/// BlazeFace flattens its batch into the anchor axis of each of its two branches before
/// concatenating them, so a batch does not split back into per-image answers: the load-time
/// check finds that and the model runs unbatched, with correct answers.
#[test]
fn a_model_whose_batch_does_not_split_runs_unbatched() {
    use ganglion_runtime::LoadOptions;
    let options = LoadOptions {
        batch_max: 4,
        ..LoadOptions::default()
    };
    let model = Model::load_with("blazeface", zoo::BLAZEFACE_ONNX, &options).unwrap();
    assert_eq!(model.batch_max(), 1);
    let frame =
        vision::blazeface_input(&vision::decode_image(zoo::ASTRONAUT_PNG).unwrap()).unwrap();
    let mut state = model.state().unwrap();
    let frames = [std::slice::from_ref(&frame), std::slice::from_ref(&frame)];
    for outputs in model.run_batch(&mut state, &frames) {
        assert!(max_face_score(&outputs.unwrap()).unwrap() > 0.9);
    }
}

/// A batch never waits past a request's deadline: with a 1 s window and a deadline a few
/// service times away, the window closes early and the lone request is answered in time.
#[tokio::test]
async fn the_batch_window_gives_way_to_the_tightest_deadline() {
    use ganglion_runtime::LoadOptions;
    let options = LoadOptions {
        batch_max: 4,
        ..LoadOptions::default()
    };
    let batched = Model::load_with("hand-landmark", zoo::HAND_LANDMARK_ONNX, &options).unwrap();
    assert_eq!(batched.batch_max(), 4);
    let runtime = Runtime::new(
        vec![batched],
        RuntimeConfig {
            workers: 1,
            queue: 16,
            batch_window: Duration::from_secs(1),
        },
    );
    let hash = runtime.models().next().unwrap().hash();
    let frame = vision::hand_input(&vision::decode_image(zoo::ASTRONAUT_PNG).unwrap()).unwrap();
    let per_run = runtime
        .service_time(&hash)
        .expect("measured while warming up");
    let asked = Instant::now();
    let deadline = asked + per_run * 3 + Duration::from_millis(50);
    let outputs = runtime.infer(&hash, vec![frame], deadline).await;
    assert!(outputs.is_ok(), "{outputs:?}");
    assert!(
        asked.elapsed() < Duration::from_millis(900),
        "answered after {:?}: the 1 s window did not give way to the deadline",
        asked.elapsed()
    );
}

#[tokio::test]
async fn service_percentiles_come_from_the_runs_themselves() {
    let runtime = Runtime::new(vec![blazeface()], RuntimeConfig::default());
    let hash = runtime.models().next().unwrap().hash();
    let image = vision::decode_image(zoo::ASTRONAUT_PNG).unwrap();
    let input = vision::blazeface_input(&image).unwrap();
    let far = Instant::now() + Duration::from_secs(60);
    let warmed = runtime.service_percentiles(&hash).map_or(0, |p| p.runs);
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let asked = Instant::now();
        runtime
            .infer(&hash, vec![input.clone()], far)
            .await
            .unwrap();
        slowest = slowest.max(asked.elapsed());
    }
    let p = runtime.service_percentiles(&hash).unwrap();
    assert_eq!(p.runs, warmed + 20);
    assert!(p.p50 > Duration::ZERO && p.p50 <= p.p95, "{p:?}");
    // A run cannot take longer than the caller waited for it (warm-up runs aside, which are
    // at most a handful of the window).
    let within = p.p50 <= slowest;
    assert!(
        within,
        "median run {:?} > slowest answer {slowest:?}",
        p.p50
    );
    assert!(runtime
        .service_percentiles(&ModelHash::of(b"other"))
        .is_none());
}

/// On a provider's multi-threaded tokio runtime, a request with a free slot runs on the calling
/// thread: same answer as the model run directly, counted in the runtime's figures; one that is
/// admitted but not yet polled holds no slot, and dropped unrun leaves the queue's count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_free_slot_runs_on_the_calling_thread_and_an_unpolled_one_holds_no_slot() {
    let model = blazeface();
    let image = vision::decode_image(zoo::ASTRONAUT_PNG).unwrap();
    let input = vision::blazeface_input(&image).unwrap();
    let expected = model.run_once(std::slice::from_ref(&input)).unwrap();
    let runtime = Runtime::new(vec![model], RuntimeConfig::default());
    let hash = runtime.models().next().unwrap().hash();
    let far = || Instant::now() + Duration::from_secs(30);

    let outputs = tokio::spawn({
        let runtime = std::sync::Arc::new(runtime);
        let (hash, input) = (hash, input.clone());
        async move {
            let runs = runtime.service_percentiles(&hash).map_or(0, |p| p.runs);
            let answer = runtime.call(&hash, vec![input.clone()], far(), Instant::now());
            let outputs = answer.await.unwrap();
            // Admitted but not yet polled: counted, holding no slot, so a queued request
            // still gets the worker thread (a held slot would keep it waiting).
            let held = runtime.call(&hash, vec![input.clone()], far(), Instant::now());
            assert_eq!(runtime.queued(), 1);
            let rx = runtime
                .submit(&hash, vec![input], far(), Instant::now())
                .unwrap();
            tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .expect("the worker got the slot")
                .unwrap()
                .unwrap();
            // Dropped unrun: out of the count, and never run.
            drop(held);
            assert_eq!(runtime.queued(), 0);
            assert_eq!(runtime.service_percentiles(&hash).unwrap().runs, runs + 2);
            outputs
        }
    })
    .await
    .unwrap();
    assert_eq!(outputs, expected);
}
