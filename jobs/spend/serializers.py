"""Output shapes of spend (views and schema alike)."""

from __future__ import annotations

from rest_framework import serializers


class GenerationUsageSerializer(serializers.Serializer):
    usedToday = serializers.IntegerField(
        help_text="Paid generations today (succeeded or cut short; a reuse is free)."
    )
    pending = serializers.IntegerField(help_text="Queued or running jobs that will still pay.")
    reusedToday = serializers.IntegerField(help_text="Jobs that reused an earlier original.")
    dailyLimit = serializers.IntegerField(allow_null=True, help_text="null: unlimited.")
    remaining = serializers.IntegerField(
        allow_null=True, help_text="dailyLimit - usedToday - pending (null: unlimited)."
    )
    limitSource = serializers.ChoiceField(
        choices=["default", "override", "staff", "unlimited"],
        help_text="DAILY_GENERATION_QUOTA, the user's own quota, staff (exempt), or none.",
    )
    resetsAt = serializers.DateTimeField(help_text="The next midnight in the server's TIME_ZONE.")


class PendingJobsUsageSerializer(serializers.Serializer):
    pending = serializers.IntegerField(help_text="Jobs waiting, delayed or running.")
    pendingLimit = serializers.IntegerField(help_text="JOB_MAX_PENDING_PER_USER.")


class UsageSerializer(serializers.Serializer):
    """GET /api/usage."""

    generations = GenerationUsageSerializer()
    jobs = PendingJobsUsageSerializer()
    submitRate = serializers.CharField(
        allow_null=True, help_text='Submissions allowed, e.g. "60/min" (null: no limit).'
    )
    timestamp = serializers.IntegerField(help_text="ms since the epoch.")


class SpendTotalsSerializer(serializers.Serializer):
    calls = serializers.IntegerField(help_text="Calls to the image model.")
    reused = serializers.IntegerField(help_text="Generations that reused an original instead.")
    failed = serializers.IntegerField(help_text="Calls answered with an error (not billed).")
    estimatedCostUsd = serializers.FloatField()


class ModelSpendSerializer(serializers.Serializer):
    model = serializers.CharField()
    calls = serializers.IntegerField()
    estimatedCostUsd = serializers.FloatField()


class SpendOverviewSerializer(serializers.Serializer):
    """The staff's ``spend`` block of GET /api/jobs/stats/overview."""

    currency = serializers.CharField()
    today = SpendTotalsSerializer()
    last30Days = SpendTotalsSerializer()
    todayByModel = ModelSpendSerializer(many=True)
