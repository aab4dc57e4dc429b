"""The environment as third-party code sees it: gymnasium's registry and vector envs, Stable-Baselines3, failures as events."""

import gymnasium as gym
import numpy as np
import pytest

from image_poser.env import EnvConfig, ImagePoserEnv, make_vector_env
from image_poser.experts import Registry, load_registry


def test_gym_make_by_id():
    env = gym.make("ImagePoser/Shapes-v0", config=EnvConfig(split="val"))
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and "action_mask" in info
    env.close()


def test_async_vector_env_same_step_autoreset():
    venv = make_vector_env(2, EnvConfig(split="val", horizon=2), asynchronous=True)
    obs, info = venv.reset(seed=1)
    saw_final = False
    for _ in range(6):
        acts = np.array([np.flatnonzero(m)[0] for m in info["action_mask"]])
        obs, r, term, trunc, info = venv.step(acts)
        if (term | trunc).any():
            assert "final_obs" in info and info["final_info"]["_episode"].any()
            saw_final = True
    venv.close()
    assert saw_final


def test_same_seed_same_episode():
    def run():
        env = ImagePoserEnv(EnvConfig(split="val"))
        obs, info = env.reset(seed=7)
        rewards = []
        for _ in range(6):
            obs, r, term, trunc, info = env.step(int(np.flatnonzero(info["action_mask"])[-2]))
            rewards.append(r)
            if term or trunc:
                break
        return rewards, obs

    (r1, o1), (r2, o2) = run(), run()
    assert r1 == r2 and np.array_equal(o1, o2)


class Broken:
    kind, cost, max_tokens, good_at, name = "t2i", 1.0, 77, "", "broken"

    def __call__(self, command, image=None, *, seed=0):
        raise RuntimeError("CUDA error: device-side assert triggered")


def test_expert_failure_is_an_event_with_a_penalty():
    reg = load_registry()
    env = ImagePoserEnv(EnvConfig(split="val"), registry=Registry([Broken()] + list(reg)))
    obs, info = env.reset(seed=0)
    obs, r, term, trunc, info = env.step(0)
    step = env.trajectory().steps[-1]
    assert step.error and "RuntimeError" in step.error and info["image"] is None
    assert r == pytest.approx(-env.cfg.cost_weight * 1.0 - env.cfg.failure_penalty)
    obs, r, term, trunc, info = env.step(0)
    assert info["action_mask"][0] == 0  # failed twice: masked


def test_paper_obs_mode_is_text_only():
    env = ImagePoserEnv(EnvConfig(split="val", obs_mode="paper"))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2 * env.cfg.text_dim,)


def test_stable_baselines3_checks_and_trains_on_it():
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_checker import check_env as sb3_check_env
    from stable_baselines3.common.monitor import Monitor

    env = ImagePoserEnv(EnvConfig(split="val", horizon=3))
    sb3_check_env(env, warn=False)  # SB3's own referee: spaces, dtypes, reset/step signatures
    model = PPO("MlpPolicy", Monitor(env), n_steps=64, batch_size=32, n_epochs=2, seed=0, verbose=0, device="cpu")
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=128)
    assert len(model.ep_info_buffer) >= 128 // 3 // 2, "episodes of at most 3 steps: dozens must have finished"
    assert all(np.isfinite(e["r"]) for e in model.ep_info_buffer)
    assert any(not (a == b).all() for a, b in zip(before, model.policy.parameters())), "learning changed no weight"


def test_check_env_passes_on_the_registered_defaults():
    from gymnasium.utils.env_checker import check_env

    check_env(gym.make("ImagePoser/Shapes-v0").unwrapped, skip_render_check=True)
