"""Scheduling of checks on pytest-xdist workers: a case's checks on one worker, crashes survived.

pytest-xdist's ``loadgroup`` keeps each ``xdist_group`` (here: a case) on one worker, but
after a worker crash it hands the crashed check to the replacement worker again, which
crashes the same way, and it can leave a worker with a single check forever: a worker
runs a check only once it holds the next one or has received the shutdown command. This scheduler drops
the crashed check (the plugin records it as an error) and never leaves a worker with fewer
than two pending checks while work or a shutdown is due.
"""

from __future__ import annotations

from xdist.scheduler import LoadGroupScheduling
from xdist.workermanage import WorkerController


class CaseGroupScheduling(LoadGroupScheduling):
    """``loadgroup`` scheduling that survives crashed workers."""

    def remove_node(self, node: WorkerController) -> str | None:
        crashitem = super().remove_node(node)
        if crashitem is None:
            return None
        for scope, unit in list(self.workqueue.items()):
            if crashitem in unit:
                unit[crashitem] = True
            if all(unit.values()):
                del self.workqueue[scope]
        return crashitem

    def _reschedule(self, node: WorkerController) -> None:
        super()._reschedule(node)
        while not node.shutting_down and self._pending_of(self.assigned_work[node]) < 2:
            if not self.workqueue:
                node.shutdown()
                return
            self._assign_work_unit(node)
