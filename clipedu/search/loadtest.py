"""有界的回环压测：固定请求数、固定并发，混合 /search、/similar、/classify 与少量故意的坏请求（见第 6 章 sec-service）。

只允许对 127.0.0.1 / localhost 发请求：压测别人的机器不是教学内容。
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

QUERIES = ["红色的圆形", "蓝色的正方形", "一个绿色的三角形", "黄色的星形", "紫色的菱形", "白色的十字形"]
LABELS = "红色的圆形,蓝色的正方形,绿色的三角形,黄色的星形"
# 故意的坏请求与它们应得的状态码
BAD_REQUESTS = [
    ("GET", "/search?q=", None, 400),
    ("GET", "/search?q=%E7%BA%A2&k=0", None, 400),
    ("GET", "/search?q=%E7%BA%A2&k=100000", None, 400),
    ("GET", "/search?q=" + "%E7%BA%A2" * 500, None, 400),
    ("POST", "/similar?k=5", b"this is not an image", 415),
    ("GET", "/image/99999999", None, 404),
]


@dataclass
class LoadResult:
    latencies_ms: dict = field(default_factory=dict)   # 端点 → 每个成功请求的毫秒数
    unexpected: list = field(default_factory=list)      # (方法, 路径, 状态码, 期望) 不符的请求
    bad_ok: int = 0                                     # 得到了期望 4xx 的坏请求数
    seconds: float = 0.0

    def summary(self) -> dict:
        out = {"seconds": round(self.seconds, 2), "unexpected": len(self.unexpected), "bad_as_expected": self.bad_ok}
        for name, xs in sorted(self.latencies_ms.items()):
            a = np.asarray(xs)
            out[name] = {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 2),
                         "p99_ms": round(float(np.percentile(a, 99)), 2)}
        return out


def _request(base: str, method: str, path: str, body: bytes | None):
    req = urllib.request.Request(base + path, data=body, method=method)
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    return status, 1000 * (time.perf_counter() - t0)


def plan_requests(n: int, image_bytes: list[bytes], bad_every: int = 100) -> list[tuple]:
    """n 个请求：每 bad_every 个里一个坏的，其余按 6:2:2 混合检索、以图搜图、分类。"""
    plan = []
    for i in range(n):
        if bad_every and i % bad_every == bad_every - 1:
            plan.append(BAD_REQUESTS[(i // bad_every) % len(BAD_REQUESTS)])
        elif i % 10 < 6:
            q = urllib.parse.quote(QUERIES[i % len(QUERIES)])
            plan.append(("GET", f"/search?q={q}&k=12", None, 200))
        elif i % 10 < 8:
            plan.append(("POST", "/similar?k=12", image_bytes[i % len(image_bytes)], 200))
        else:
            plan.append(("POST", "/classify?labels=" + urllib.parse.quote(LABELS), image_bytes[i % len(image_bytes)], 200))
    return plan


def run_load(base: str, plan: list[tuple], concurrency: int = 16) -> LoadResult:
    host = urllib.parse.urlparse(base).hostname
    if host not in {"127.0.0.1", "localhost"}:
        raise ValueError(f"压测只对回环地址进行，实际为 {host!r} / load tests are loopback-only")
    result = LoadResult()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        outcomes = list(pool.map(lambda r: (r, _request(base, r[0], r[1], r[2])), plan))
    result.seconds = time.perf_counter() - t0
    for (method, path, _, expected), (status, ms) in outcomes:
        if status != expected:
            result.unexpected.append((method, path[:60], status, expected))
        elif expected >= 400:
            result.bad_ok += 1
        else:
            result.latencies_ms.setdefault(path.split("?")[0], []).append(ms)
    return result


def fetch_json(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=60) as r:
        return json.loads(r.read())
