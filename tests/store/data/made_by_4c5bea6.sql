BEGIN TRANSACTION;
CREATE TABLE audit (
    seq BIGINT PRIMARY KEY,            -- 1, 2, 3, ...: given by the one writer under the "audit" lock
    ts DOUBLE PRECISION NOT NULL,      -- unix seconds
    actor TEXT NOT NULL,               -- key:<id>, cli:<user>, auto-rollback, anonymous, ...
    action TEXT NOT NULL,              -- e.g. label.set, key.create, artifact.refused, auth.denied
    target TEXT NOT NULL,              -- what it applied to: a model, a key id, a route
    details TEXT NOT NULL,             -- JSON object
    prev_hash TEXT NOT NULL,           -- the previous record's hash (64 zeros for the first)
    hash TEXT NOT NULL                 -- sha256 of prev_hash and this record's canonical content
);
CREATE TABLE feedback (
    id TEXT PRIMARY KEY,               -- the prediction id; the first label recorded wins
    ts DOUBLE PRECISION NOT NULL,      -- unix seconds when the label arrived
    label TEXT NOT NULL,               -- JSON value: the ground truth
    model TEXT NOT NULL
);
INSERT INTO "feedback" VALUES('aaa-1',1.79665386258087730409e+09,'1','m');
INSERT INTO "feedback" VALUES('bbb-2',1.79665386258087730409e+09,'0','m');
CREATE TABLE maintenance (
    job TEXT PRIMARY KEY,              -- e.g. retention
    last_run DOUBLE PRECISION NOT NULL -- unix seconds the job last ran to the end, in any process
);
CREATE TABLE prediction_batches (
    batch INTEGER PRIMARY KEY,                    -- what predictions.batch refers to
    ts DOUBLE PRECISION NOT NULL,      -- unix seconds when the batch was recorded (its predictions' ts)
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    request_id TEXT,
    latency_ms DOUBLE PRECISION,       -- time inside the prediction path for the whole request
    rows INTEGER NOT NULL,             -- rows stored: the request's sampled predictions, in order
    features TEXT NOT NULL,            -- JSON list: the stored features, in the order of ``inputs``
    inputs TEXT NOT NULL,              -- JSON list of columns, one list of ``rows`` values per feature;
                                       -- pii features hashed or absent (never raw)
    outputs TEXT NOT NULL,             -- JSON list: the ``rows`` predictions
    probabilities TEXT                 -- JSON list of ``rows`` lists in the model's class order, or NULL
);
INSERT INTO "prediction_batches" VALUES(1,100.0,'m',1,'r1',1.0,2,'["customer_id","x"]','[["73662dcee4acad8d3d983bf08054fe565e2daf9ea4d9b6b02b94564ed55077e4","d1a157c38058ec80f95009c7bef701fac96e78ffd559343c2d3f1a0a68824240"],[1.0,3.0]]','[1,3]','[[0.1,0.9],[0.3,0.7]]');
INSERT INTO "prediction_batches" VALUES(2,101.0,'m',2,'r2',1.0,3,'["customer_id","x"]','[["81556ec6bebf1dcd140c32b294ebf183e866ac2a1aae4969c07e78d805472c02","c1f55b03bd7430fe41aa600f1d130c32c11e2168b0221751fa156741c482b035","2fb79d076174deefc3ada82bf5da31bf5859b695a54160cb8ae27145b4a0e5a6"],[0.0,1.0,2.0]]','[5,6,7]',NULL);
INSERT INTO "prediction_batches" VALUES(3,102.0,'m',1,'r3',1.0,7,'["customer_id","x"]','[["56a687d43ffa77474459a6238cfa58d4f9dea4009da0afaf95842e5beeb51e69","b36126c37428c65076912aa642fd717a0ff261ae6d9d050a23869550dd56f049","23a148366b4c4f1c39bab77c87837225f24af9dab5a82b9707e4937e7b3370a4","6a1af48a15d36445ce4feb567738195169982e04ed2f860a2e4a02f2f7eb2ddc","94c5eddbaeefa720253f60eafbcd7935fd54fe7ae728857500f2d198616cb659","f23b0e78698537d6b3f013dac1d8a1f304a32f9391b883af5a0bbd315169977f","63da456cee25bea8783afde826f2f82162a08d3fab103328ab24e73a38d65d87"],[0.0,3.0,5.0,12.0,13.0,14.0,16.0]]','[100,103,105,112,113,114,116]',NULL);
CREATE TABLE predictions (
    
    id TEXT PRIMARY KEY,               -- the prediction id the client got (<request base>-<row index>)
    ts DOUBLE PRECISION NOT NULL,      -- unix seconds when the prediction was recorded
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    batch BIGINT,                      -- the prediction_batches row with its inputs and output
    row_index INTEGER,                 -- its row in that batch's columns
    subject TEXT                       -- keyed hash of the person it is about (the manifest's "subject"
                                       -- feature), '' when that value was missing, NULL without a subject
);
INSERT INTO "predictions" VALUES('aaa-1',100.0,'m',1,1,0,'73662dcee4acad8d3d983bf08054fe565e2daf9ea4d9b6b02b94564ed55077e4');
INSERT INTO "predictions" VALUES('aaa-3',100.0,'m',1,1,1,'d1a157c38058ec80f95009c7bef701fac96e78ffd559343c2d3f1a0a68824240');
INSERT INTO "predictions" VALUES('bbb-0',101.0,'m',2,2,0,NULL);
INSERT INTO "predictions" VALUES('bbb-1',101.0,'m',2,2,1,NULL);
INSERT INTO "predictions" VALUES('bbb-2',101.0,'m',2,2,2,NULL);
INSERT INTO "predictions" VALUES('ccc-0',102.0,'m',1,3,0,'56a687d43ffa77474459a6238cfa58d4f9dea4009da0afaf95842e5beeb51e69');
INSERT INTO "predictions" VALUES('ccc-3',102.0,'m',1,3,1,'b36126c37428c65076912aa642fd717a0ff261ae6d9d050a23869550dd56f049');
INSERT INTO "predictions" VALUES('ccc-5',102.0,'m',1,3,2,'23a148366b4c4f1c39bab77c87837225f24af9dab5a82b9707e4937e7b3370a4');
INSERT INTO "predictions" VALUES('ccc-12',102.0,'m',1,3,3,'6a1af48a15d36445ce4feb567738195169982e04ed2f860a2e4a02f2f7eb2ddc');
INSERT INTO "predictions" VALUES('ccc-13',102.0,'m',1,3,4,'94c5eddbaeefa720253f60eafbcd7935fd54fe7ae728857500f2d198616cb659');
INSERT INTO "predictions" VALUES('ccc-14',102.0,'m',1,3,5,'f23b0e78698537d6b3f013dac1d8a1f304a32f9391b883af5a0bbd315169977f');
INSERT INTO "predictions" VALUES('ccc-16',102.0,'m',1,3,6,'63da456cee25bea8783afde826f2f82162a08d3fab103328ab24e73a38d65d87');
CREATE TABLE requests (
    
    request_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,      -- unix seconds when the answer was sent
    model TEXT NOT NULL,
    version INTEGER,                   -- the version that answered (after any fallback)
    role TEXT NOT NULL,                -- production | canary | pinned | label | fallback
    status INTEGER NOT NULL,           -- HTTP status of the answer
    latency_ms DOUBLE PRECISION NOT NULL,  -- time inside the prediction path
    rows INTEGER NOT NULL,
    fallback_from INTEGER,             -- version that failed when role = fallback
    error TEXT,                        -- error code when status >= 400
    summary TEXT                       -- JSON: class counts, or count/mean/std of regression outputs
);
CREATE TABLE shadow (
    
    ts DOUBLE PRECISION NOT NULL,
    model TEXT NOT NULL,
    live_version INTEGER NOT NULL,
    shadow_version INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    agreement DOUBLE PRECISION,        -- classification: share of equal predictions
    mean_abs_diff DOUBLE PRECISION,    -- regression: mean |live - shadow|; classification: of probabilities
    error TEXT,                        -- the shadow's failure, if it failed
    detail TEXT                        -- JSON: per-class agreement
);
CREATE TABLE store_secrets (
    name TEXT PRIMARY KEY,             -- e.g. subject-key: what the secret is for
    value TEXT NOT NULL                -- hex; made once by the first process that needs it
);
CREATE INDEX requests_model_ts ON requests (model, ts);
CREATE INDEX shadow_model_ts ON shadow (model, ts);
CREATE INDEX prediction_batches_ts ON prediction_batches (ts);
CREATE INDEX predictions_model_version_ts ON predictions (model, version, ts);
CREATE INDEX feedback_model_ts ON feedback (model, ts);
CREATE INDEX audit_target_seq ON audit (target, seq);
CREATE INDEX predictions_subject ON predictions (subject) WHERE subject IS NOT NULL;
CREATE INDEX predictions_subject_batch ON predictions (batch) WHERE subject IS NOT NULL;
COMMIT;
