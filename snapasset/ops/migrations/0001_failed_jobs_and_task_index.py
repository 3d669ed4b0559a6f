from django.db import migrations

# jobs.task_results finds a job's TaskResult rows by their stored arguments (the job id):
# an index on them, for job tasks only (their arguments are one id, so always small).
JOB_TASK_ARGS_INDEX = """
CREATE INDEX IF NOT EXISTS ops_taskresult_job_args_idx
ON django_celery_results_taskresult (task_args)
WHERE task_name IN ('cleanup.run_cleanup', 'jobs.generate_images')
"""


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("jobs", "0002_job_generation_calls"),
        ("django_celery_results", "0014_alter_taskresult_status"),
    ]

    operations = [
        migrations.CreateModel(
            name="FailedJob",
            fields=[],
            options={
                "verbose_name": "failed job (dead letter)",
                "verbose_name_plural": "failed jobs (dead letters)",
                "proxy": True,
                "indexes": [],
                "constraints": [],
            },
            bases=("jobs.job",),
        ),
        migrations.RunSQL(
            JOB_TASK_ARGS_INDEX,
            reverse_sql="DROP INDEX IF EXISTS ops_taskresult_job_args_idx",
        ),
    ]
