"""A Prefect automation that notifies when a run of a Retro-PEFT deployment fails or crashes.

`retro alert-on-failure <url>` saves a notification block (a plain JSON webhook, or Slack with
`--slack`) and an automation: flow runs tagged `retro` (every deployment in prefect.yaml) that
enter Failed or Crashed send a message naming the run, its deployment, the state message and a
link to the run in the Prefect UI, where the `retro-failure` artifact says which stage failed.
"""

from __future__ import annotations

from typing import Literal

SUBJECT = "Retro-PEFT: {{ flow_run.name }} ({{ deployment.name }}) {{ flow_run.state.name }}"
BODY = (
    "Flow run {{ flow_run.name }} of deployment {{ deployment.name }} entered "
    "{{ flow_run.state.name }}: {{ flow_run.state.message }}\n"
    "The registered versions and the champion alias were not changed.\n"
    "{{ flow_run|ui_url }}"
)


def create_failure_alert(
    url: str, kind: Literal["webhook", "slack"] = "webhook", name: str = "retro-failure-alert"
):  # noqa: ANN201
    """Create (or replace) the notification block and the automation; return the automation."""
    from prefect.automations import Automation, EventTrigger, SendNotification
    from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook

    if kind == "slack":
        block = SlackWebhook(url=url)
    else:
        block = CustomWebhookNotificationBlock(
            name=name, url=url, json_data={"subject": "{{subject}}", "text": "{{body}}"}
        )
    block_id = block.save(name, overwrite=True)
    while True:  # replace earlier copies of this automation
        try:
            Automation.read(name=name).delete()
        except ValueError:
            break
    return Automation(
        name=name,
        description="Notify when a run of a Retro-PEFT deployment fails or crashes",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.id": "prefect.tag.retro"},
            posture="Reactive",
            threshold=1,
        ),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
    ).create()
