"""Every code block of the user's API document runs as written, and does what its prose says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_every_spec_block_runs_and_behaves() -> None:
    runner = Path(__file__).with_name("spec_runner.py")
    proc = subprocess.run([sys.executable, str(runner)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    *blocks, summary = lines
    assert summary["blocks"] == len(blocks) == 9

    quick = blocks[0]
    assert quick["first"] == "BookingAgent"  # "I need to book a table" -> BookingAgent
    assert quick["result"]["agent"] == "LeaveAgent"  # then "Request time off" -> LeaveAgent
    assert blocks[2]["constructed"] is True  # routing_strategy="llm" is accepted
    assert blocks[3]["urgent"] == "UrgentAgent" and blocks[3]["regular"] == "BookingAgent"
    assert blocks[4]["ok_processed"] is True
    assert blocks[4]["blocked_processed"] is False and blocks[4]["blocked_active"] == 0
    assert blocks[5]["result"]["agent"] == "BookingAgent"  # multi-tenant process()
    assert "[State: waiting_for_input]" in blocks[6]["printed"]  # streaming prints chunks and states
    assert blocks[6]["printed"].endswith("Start date?")
    assert blocks[7]["active"]  # get_active_agents lists the live agent
    assert blocks[8]["no_match_text"] == "I can help with bookings and leave requests."
    assert blocks[8]["no_match_flag"] is True
    assert ["company_a", "How many guests?"] in summary["history"]  # post_process saw the result
