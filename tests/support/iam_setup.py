"""Sets up IAM in a moto server for the IAM login tests, then turns on its
signature checking.

Usage: iam_setup.py ENDPOINT

Creates the user `tester` (allowed sts:AssumeRole) and the roles `support`
and `nobody` (trusting `tester`), turns on authentication
(POST /moto-api/reset-auth with body 0: every later request to this moto
process must be signed correctly), assumes both roles as `tester`, and
prints their temporary credentials as JSON. From then on this moto process
checks every signature, so it serves these tests only.
"""

import json
import sys
import urllib.request

import boto3

ACCOUNT = "123456789012"


def main() -> None:
    endpoint = sys.argv[1]
    admin = dict(
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="tester")
    iam.put_user_policy(
        UserName="tester",
        PolicyName="assume",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName="tester")["AccessKey"]
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/tester"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )
    for role in ("support", "nobody"):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)

    # text/plain: with a form content type Flask eats the body.
    req = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(req).read()

    sts = boto3.client(
        "sts",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    out = {"account": ACCOUNT}
    for role in ("support", "nobody"):
        c = sts.assume_role(
            RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}", RoleSessionName="tests"
        )["Credentials"]
        out[role] = {
            "AccessKeyId": c["AccessKeyId"],
            "SecretAccessKey": c["SecretAccessKey"],
            "SessionToken": c["SessionToken"],
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
