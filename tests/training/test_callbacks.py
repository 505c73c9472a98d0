"""CPU-time budget: stops a run once its process has used the budget, counting across restarts."""

from __future__ import annotations

from pathlib import Path

from medseg.data import generate_dataset
from medseg.training import load_config, train
from medseg.training.callbacks import CpuTimeBudget


def test_cpu_budget_stops_training(tmp_path: Path) -> None:
    data = generate_dataset(tmp_path / "d", per_modality=4, size=32, seed=0, modalities=("xray",))
    cfg = load_config(None, [f"out_dir={tmp_path / 'run'}", f"data.root={data}", "data.img_size=32",
                             "model.name=basic_unet", "model.options={features: [4, 4, 8, 8, 16, 4]}",
                             "trainer.max_steps=50", "trainer.batch_size=2", "trainer.accelerator=cpu",
                             "trainer.progress_bar=false", "trainer.max_cpu_minutes=0.0001"])
    assert train(cfg).global_step == 1  # 6 ms of CPU are gone after the first step


def test_consumed_time_survives_a_restart() -> None:
    budget = CpuTimeBudget(100.0)
    budget.load_state_dict({"consumed": 42.0})
    assert budget.consumed == 42.0
    budget.on_train_start(None, None)  # type: ignore[arg-type]
    sum(i * i for i in range(200_000))  # burn a little CPU
    assert 42.0 < budget.consumed < 50.0 and budget.state_dict()["consumed"] >= 42.0
