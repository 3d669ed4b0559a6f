from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0003_job_source_url"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="delay_reason",
            field=models.CharField(
                blank=True,
                choices=[
                    ("retry", "Retry after an error"),
                    ("provider-slot", "Waiting for a provider slot"),
                ],
                default="",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="reuse",
            field=models.BooleanField(default=False),
        ),
    ]
