"""A peer for bench/peers.py: the same pull written with dlt's rest_api source.

It reads the lead ids from the `leads` table of --db (as lsq-sync's default [leads].query
does), fetches each lead's tasks with a parallelized rest_api resource resolved from them,
and loads them into the same database through dlt's sqlalchemy destination. Run it with a
Python that has `dlt[sqlalchemy]` installed (not a dependency of lsq-sync):

    python -m venv /tmp/dltenv && /tmp/dltenv/bin/pip install 'dlt[sqlalchemy]'
    /tmp/dltenv/bin/python bench/peer_dlt.py --url URL --db sqlite:////tmp/x.db
"""

from __future__ import annotations

import argparse
import os
import tempfile

import dlt
import sqlalchemy as sa
from dlt.sources.rest_api import rest_api_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="the simulator's base URL")
    parser.add_argument("--db", required=True, help="database URL holding `leads`")
    parser.add_argument("--access-key", default="")
    parser.add_argument("--secret-key", default="")
    args = parser.parse_args()
    os.environ.setdefault("DLT_DATA_DIR", tempfile.mkdtemp(prefix="dlt-"))
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    engine = sa.create_engine(args.db)
    with engine.connect() as conn:
        lead_ids = [row[0] for row in conn.execute(sa.text("SELECT lead_id FROM leads"))]
    engine.dispose()

    @dlt.resource(name="leads", selected=False)
    def leads():  # type: ignore[no-untyped-def]
        yield [{"lead_id": lead_id} for lead_id in lead_ids]

    source = rest_api_source({
        "client": {"base_url": args.url},
        "resource_defaults": {"endpoint": {"params": {
            "accessKey": args.access_key, "secretKey": args.secret_key}}},
        "resources": [leads, {
            "name": "tasks",
            "primary_key": "TaskID",
            "write_disposition": "merge",
            "parallelized": True,
            "endpoint": {
                "path": "v2/LeadManagement.svc/RetrieveTaskByLeadId",
                "params": {"leadId": "{resources.leads.lead_id}"},
                "data_selector": "TaskList",
                "paginator": "single_page",
            },
        }],
    })
    pipeline = dlt.pipeline(pipeline_name="peer", destination=dlt.destinations.sqlalchemy(
        args.db), dataset_name="peer")
    pipeline.run(source)


if __name__ == "__main__":
    main()
