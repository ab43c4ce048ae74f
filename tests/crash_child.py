"""The training process that tests/test_crash_resume.py kills: a tiny CPU run in `folder`
that resumes the run there when it has a checkpoint (else starts it), and reports each log
line through a multiprocessing connection. No test split: every epoch writes best.safetensors
(the latest EMA weights), so each save point of CODEXT_KILL_IN_SAVE is reached in every save."""
import os

CONFIG = dict(backbone="edgenext_tiny_test", decoder_dim=8, num_experts=2, img_size=32,
              batch_size=4, stage1_epochs=1, lr=1e-3, synthetic_train=4, synthetic_test=0,
              seed=5, num_threads=1)


def config(folder, epochs):
    import codext
    return codext.Config(**CONFIG, epochs=epochs, checkpoint_dir=str(folder))


def run(folder, epochs, kill, conn):
    """Trains until done (exit 0) or killed; kill: a CODEXT_KILL_IN_SAVE value or None."""
    if kill:
        os.environ["CODEXT_KILL_IN_SAVE"] = kill
    from codext.train import train
    resume = folder if os.path.exists(os.path.join(folder, "last.safetensors")) else None
    conn.send(("go", resume))
    train(config(folder, epochs), resume=resume, overwrite=resume is None,
          log=lambda line: conn.send(("line", line)))
    conn.send(("done", None))
