from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from jobs.models import Job, JobKind, JobStatus


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Job

    owner = factory.SubFactory(UserFactory)
    kind = JobKind.IMAGE_GENERATION
    status = JobStatus.WAITING
    prompt = "A red fox in the snow"
    platforms = factory.LazyFunction(lambda: ["instagram-post", "twitter-post"])
